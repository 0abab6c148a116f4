"""EfficientNet against the reference: counts, layout, initialisers, forward and backward passes.

Full-size counts come from shape-only traces (jax.eval_shape); compute runs at tiny resolutions
with tiny widths, because depthwise convolutions are slow on CPU.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effnet_jax.models import create_model, efficientnet
from effnet_jax.models.cost import model_cost
from effnet_jax.models.pointwise import resolve_implementation as resolve_pointwise

# reference-spec §1.4: trainable parameters, BN moving statistics, blocks, multiply-adds (G, b0..b7).
REFERENCE_COUNTS = {
    "efficientnet-b0": (5_288_548, 42_016, 16, 0.386),
    "efficientnet-b1": (7_794_184, 62_048, 23, 0.687),
    "efficientnet-b2": (9_109_994, 67_568, 23, 0.994),
    "efficientnet-b3": (12_233_232, 87_296, 26, 1.83),
    "efficientnet-b4": (19_341_616, 125_200, 32, 4.39),
    "efficientnet-b5": (30_389_784, 172_736, 39, 10.3),
    "efficientnet-b6": (43_040_704, 224_432, 45, 19.1),
    "efficientnet-b7": (66_347_960, 310_720, 55, 37.7),
    "efficientnet-b8": (87_413_142, 380_032, 61, None),
    "efficientnet-l2": (480_309_308, 1_090_688, 88, None),
    "efficientnet-lite0": (4_652_008, 42_016, 16, None),
    "efficientnet-lite1": (5_416_680, 53_664, 21, None),
    "efficientnet-lite2": (6_092_072, 58_096, 21, None),
    "efficientnet-lite3": (8_197_096, 76_672, 24, None),
    "efficientnet-lite4": (13_006_568, 112_368, 30, None),
}
STAGE_CHANNELS = {
    "efficientnet-b0": ((16, 24, 40, 80, 112, 192, 320), (1, 2, 2, 3, 3, 4, 1), 32, 1280),
    "efficientnet-b7": ((32, 48, 80, 160, 224, 384, 640), (4, 7, 7, 10, 10, 13, 4), 64, 2560),
    "efficientnet-l2": ((72, 104, 176, 344, 480, 824, 1376), (6, 11, 11, 16, 16, 22, 6), 136, 5504),
    "efficientnet-lite4": ((24, 32, 56, 112, 160, 272, 448), (1, 4, 4, 6, 6, 8, 1), 32, 1280),
}


def mini_model(**overrides):
    """B0's first three stages at half width: 5 blocks, 2 of them with stochastic depth.

    Every kind of layer is there (expansion 1 and 6, kernels 3 and 5, strides 1 and 2, SE, skips),
    while XLA:CPU compiles it in seconds.
    """
    kwargs = dict(resolution=32, dropout_rate=0.2, block_strings=efficientnet.B0_BLOCKS[:3], num_classes=10)
    kwargs.update(overrides)
    return efficientnet.efficientnet(0.5, 1.0, **kwargs)


@pytest.mark.parametrize("name", sorted(REFERENCE_COUNTS))
def test_counts_equal_reference(name):
    params, batch_stats, blocks, gmacs = REFERENCE_COUNTS[name]
    model = create_model(name)
    assert len(model.blocks) == blocks
    # Counts do not depend on the input size; multiply-adds are checked at the variant's resolution.
    cost = model_cost(model, model.resolution if gmacs else 32)
    assert cost.params == params
    assert cost.batch_stats == batch_stats
    if gmacs:
        assert cost.macs / 1e9 == pytest.approx(gmacs, rel=0.02)


@pytest.mark.parametrize("name", sorted(STAGE_CHANNELS))
def test_stage_channels_and_repeats(name):
    channels, repeats, stem, head = STAGE_CHANNELS[name]
    model = create_model(name)
    assert (model.stem_filters, model.head_filters) == (stem, head)
    stages = [[b for b in model.blocks if b.stage == s] for s in range(1, 8)]
    assert tuple(len(s) for s in stages) == repeats
    assert tuple(s[0].out_filters for s in stages) == channels


def test_b0_survival_probabilities():
    blocks = create_model("efficientnet-b0").blocks
    skip_blocks = [i for i, b in enumerate(blocks) if b.has_skip]
    assert skip_blocks == [2, 4, 6, 7, 9, 10, 12, 13, 14]
    for index, block in enumerate(blocks):
        expected = 1.0 - 0.2 * index / 16 if index in skip_blocks else None
        assert block.survival_prob == (pytest.approx(expected) if expected else None)
    assert blocks[14].survival_prob == pytest.approx(0.825)
    # The schedule's last value (block 15 would have 0.8125) belongs to a block without a skip.
    assert 1.0 - 0.2 * 15 / 16 == pytest.approx(0.8125)


def test_se_hidden_width_follows_block_input_filters():
    blocks = create_model("efficientnet-b0").blocks
    assert blocks[0].se_filters == 8  # 32 input filters (expanded width also 32)
    assert blocks[1].se_filters == 4  # 16 input filters, expanded to 96
    assert blocks[2].se_filters == 6  # 24 input filters, expanded to 144
    variables = jax.eval_shape(
        lambda: create_model("efficientnet-b0").init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    )
    se = variables["params"]["blocks_1"]["se"]
    assert se["reduce"]["kernel"].shape == (1, 1, 96, 4)
    assert se["expand"]["kernel"].shape == (1, 1, 4, 96)


def test_lite_has_no_se_relu6_and_fixed_stem():
    model = create_model("efficientnet-lite4")
    assert model.activation == "relu6" and model.stem_filters == 32 and model.head_filters == 1280
    assert all(b.se_filters == 0 for b in model.blocks)
    assert model.blocks[0].in_filters == 32  # declared 48 at width 1.4; the real stem gives 32
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))))
    assert not any("se" in block for block in variables["params"].values() if isinstance(block, dict))


def test_reduction_endpoints_at_224():
    model = create_model("efficientnet-b0")
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3))))
    _, endpoints = jax.eval_shape(
        lambda v: model.apply(v, jnp.zeros((1, 224, 224, 3)), return_endpoints=True), variables
    )
    sides = [endpoints[f"reduction_{k}"].shape[1] for k in range(1, 6)]
    assert sides == [112, 56, 28, 14, 7]
    assert "reduction_6" not in endpoints
    for k, block in zip(range(1, 6), (0, 2, 4, 10, 15)):
        assert endpoints[f"reduction_{k}"].shape == endpoints[f"block_{block}"].shape
    assert endpoints["features"].shape == (1, 7, 7, 320)
    assert endpoints["pooled_features"].shape == (1, 1280)


def test_backbone_without_head():
    model = create_model("efficientnet-b0", include_head=False)
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3))))
    assert "classifier" not in variables["params"] and "head_conv" not in variables["params"]
    endpoints = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, 64, 64, 3))), variables)
    assert endpoints["features"].shape == (2, 2, 2, 320)


def test_initialiser_statistics(mini):
    _, variables, _ = mini
    params = variables["params"]
    depthwise = {3: [], 5: []}
    for index in range(5):
        kernel = np.asarray(params[f"blocks_{index}"]["depthwise_conv"]["kernel"])
        assert kernel.shape[2] == 1  # (k, k, 1, C)
        depthwise[kernel.shape[0]].append(kernel.ravel())
    for k, kernels in depthwise.items():
        values = np.concatenate(kernels)
        assert values.size > 1000
        assert values.std() == pytest.approx(math.sqrt(2 / k**2), rel=0.05)
        assert abs(values.mean()) < 0.03
    # Expansion conv of block 4 (1x1, 24 -> 144 channels at half width): fan_out = 144.
    expand = np.asarray(params["blocks_4"]["expand_conv"]["kernel"])
    assert expand.shape == (1, 1, 24, 144)
    assert expand.std() == pytest.approx(math.sqrt(2 / 144), rel=0.05)
    # Untruncated normal: values beyond 2 std exist (a truncated normal would have none).
    assert np.abs(expand).max() > 2.5 * math.sqrt(2 / 144)
    head = np.asarray(params["head_conv"]["kernel"])
    assert head.std() == pytest.approx(math.sqrt(2 / head.shape[-1]), rel=0.05)
    classifier = np.asarray(params["classifier"]["kernel"])
    limit = 1 / math.sqrt(10)
    assert classifier.max() <= limit and classifier.min() >= -limit
    assert classifier.std() == pytest.approx(limit / math.sqrt(3), rel=0.05)  # uniform's std
    assert not np.any(np.asarray(params["classifier"]["bias"]))
    se = params["blocks_3"]["se"]
    assert not np.any(np.asarray(se["reduce"]["bias"])) and not np.any(np.asarray(se["expand"]["bias"]))
    bn = params["blocks_3"]["bn1"]
    assert np.all(np.asarray(bn["scale"]) == 1) and not np.any(np.asarray(bn["bias"]))
    stats = variables["batch_stats"]["blocks_3"]["bn1"]
    assert not np.any(np.asarray(stats["mean"])) and np.all(np.asarray(stats["var"]) == 1)


@pytest.fixture(scope="module")
def mini():
    model = mini_model()
    images = jax.random.uniform(jax.random.PRNGKey(1), (4, 32, 32, 3), minval=-1, maxval=1)
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), images)
    return model, variables, images


@pytest.fixture(scope="module")
def eval_float32(mini):
    model, variables, images = mini
    return jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_forward_train_and_eval_under_jit(mini, eval_float32, dtype):
    model, variables, images = mini
    model = model.clone(dtype=dtype)

    @jax.jit
    def evaluate(v, x):
        return model.apply(v, x, train=False)

    @jax.jit
    def train(v, x, rng):
        return model.apply(v, x, train=True, rngs={"dropout": rng}, mutable=["batch_stats"])

    logits = evaluate(variables, images)
    assert logits.shape == (4, 10) and logits.dtype == jnp.float32
    assert np.all(np.isfinite(logits))
    np.testing.assert_array_equal(logits, evaluate(variables, images))  # eval: no dropout, no drop-path
    scale = float(np.abs(eval_float32).max())
    tolerance = 1e-5 if dtype == jnp.float32 else 0.1
    np.testing.assert_allclose(logits, eval_float32, atol=tolerance * scale)
    train_a, updates = train(variables, images, jax.random.PRNGKey(2))
    train_b, _ = train(variables, images, jax.random.PRNGKey(3))
    assert np.all(np.isfinite(train_a)) and not np.allclose(train_a, train_b)  # dropout is random in train
    moved = jax.tree_util.tree_map(lambda a, b: bool(np.any(a != b)), updates["batch_stats"],
                                   variables["batch_stats"])
    assert all(jax.tree_util.tree_leaves(moved))  # every BN updated its moving statistics
    # Parameters stay float32 whatever the compute dtype.
    assert {x.dtype for x in jax.tree_util.tree_leaves(variables["params"])} == {jnp.dtype(jnp.float32)}


def _train_loss(model, variables, images):
    labels = jnp.arange(images.shape[0]) % model.num_classes

    def loss(params):
        logits, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, images,
                                train=True, rngs={"dropout": jax.random.PRNGKey(0)}, mutable=["batch_stats"])
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(images.shape[0]), labels])

    return loss


def test_gradient_reaches_every_parameter_with_and_without_remat(mini):
    model, variables, images = mini
    grads = jax.jit(jax.grad(_train_loss(model, variables, images)))(variables["params"])
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    dead = [jax.tree_util.keystr(path) for path, g in flat if not np.any(np.asarray(g))]
    assert not dead, f"no gradient reaches {dead}"
    remat_grads = jax.jit(jax.grad(_train_loss(model.clone(remat=True), variables, images)))(variables["params"])
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grads,
                           remat_grads)


def test_depthwise_implementations_agree(mini, eval_float32):
    model, variables, images = mini
    other = "xla" if jax.default_backend() == "cpu" else "shifted"  # the path "auto" does not take
    logits = jax.jit(lambda v, x: model.clone(depthwise_implementation=other).apply(v, x))(variables, images)
    np.testing.assert_allclose(logits, eval_float32, rtol=1e-4, atol=1e-5)


def test_pointwise_implementations_agree_forward_and_backward(mini, eval_float32):
    model, variables, images = mini
    assert resolve_pointwise("auto") == ("matmul" if jax.default_backend() == "cpu" else "xla")
    as_conv, as_matmul = model.clone(pointwise_implementation="xla"), model.clone(pointwise_implementation="matmul")
    logits = jax.jit(lambda v, x: as_conv.apply(v, x))(variables, images)
    np.testing.assert_allclose(logits, eval_float32, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(jax.jit(lambda v, x: as_matmul.apply(v, x))(variables, images), eval_float32,
                               rtol=1e-4, atol=1e-5)
    grads = [jax.jit(jax.grad(_train_loss(m, variables, images)))(variables["params"]) for m in (as_conv, as_matmul)]
    # atol: the stem's patches + matmul sums its 27 products in another order than XLA's convolution.
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), *grads)


def test_drop_path_only_in_train_and_unbiased():
    from effnet_jax.models.layers import drop_path

    x = jnp.ones((20000, 1, 1, 1))
    dropped = np.asarray(drop_path(x, 0.8, jax.random.PRNGKey(0)))
    kept = dropped.ravel() > 0
    assert kept.mean() == pytest.approx(0.8, abs=0.01)
    np.testing.assert_allclose(dropped.ravel()[kept], 1 / 0.8)  # inverted scaling
    assert dropped.mean() == pytest.approx(1.0, abs=0.02)


def test_block_strings_round_trip_and_errors():
    for block_string in efficientnet.B0_BLOCKS:
        assert efficientnet.encode_block_string(efficientnet.decode_block_string(block_string)) == block_string
    args = efficientnet.decode_block_string("r1_k3_s11_e4_i24_o24_noskip")
    assert not args.id_skip and args.se_ratio is None
    for bad in ("r1_k3_s2_e1_i32_o16", "k3_s11_e1_i32_o16", "r1_k3_s11_e1_i32_o16_c1", "r1_kx_s11_e1_i32_o16"):
        with pytest.raises(ValueError):
            efficientnet.decode_block_string(bad)


def test_scan_groups_and_counts_of_b7():
    """scan_blocks scans every stage's blocks after the first; B7 keeps the reference's counts."""
    model = create_model("efficientnet-b7", scan_blocks=True)
    groups = efficientnet.block_scan_groups(model.blocks)
    assert [len(group) for group in groups] == [3, 6, 6, 9, 9, 12, 3]
    assert all(model.blocks[group[0] - 1].stage == model.blocks[group[0]].stage for group in groups)
    images = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    shapes = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), images)
    counts = tuple(sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(shapes[collection]))
                   for collection in ("params", "batch_stats"))
    assert counts == REFERENCE_COUNTS["efficientnet-b7"][:2]


def test_scan_blocks_equals_unscanned():
    """Same outputs, gradients and BN updates as the plain model, given the stacked parameters."""
    blocks = ("r3_k3_s22_e6_i16_o24_se0.25",)  # scans blocks 1 and 2
    plain = efficientnet.efficientnet(0.25, 1.0, resolution=16, dropout_rate=0.0, block_strings=blocks,
                                      num_classes=10, survival_prob=0.5)
    scanned = plain.clone(scan_blocks=True)
    images = jax.random.normal(jax.random.PRNGKey(1), (4, 16, 16, 3))
    variables = jax.jit(plain.init)(jax.random.PRNGKey(0), images)
    stacked = efficientnet.scan_block_variables(variables, plain.blocks)
    assert "blocks_1_to_2" in stacked["params"] and "blocks_1" not in stacked["params"]
    shapes = jax.tree_util.tree_map(jnp.shape, jax.eval_shape(scanned.init, jax.random.PRNGKey(0), images))
    assert jax.tree_util.tree_map(jnp.shape, stacked) == shapes
    round_trip = efficientnet.unscan_block_variables(stacked, plain.blocks)
    jax.tree_util.tree_map(np.testing.assert_array_equal, round_trip, variables)

    # Eval, with per-block survival probabilities scanned (they differ: 1 - 0.5·i/N).
    assert plain.blocks[1].survival_prob != plain.blocks[2].survival_prob
    assert model_cost(scanned, 16) == model_cost(plain, 16)
    logits, endpoints = jax.jit(lambda v: scanned.apply(v, images, return_endpoints=True))(stacked)
    plain_logits, plain_endpoints = jax.jit(lambda v: plain.apply(v, images, return_endpoints=True))(variables)
    np.testing.assert_allclose(logits, plain_logits, atol=1e-6)
    assert {k for k in plain_endpoints if "block_" not in k} <= set(endpoints)
    # Stochastic depth draws per block inside the scan.
    run = jax.jit(lambda rng: scanned.apply(stacked, images, train=True, rngs={"dropout": rng},
                                            mutable=["batch_stats"])[0])
    a, b = run(jax.random.PRNGKey(2)), run(jax.random.PRNGKey(3))
    assert np.all(np.isfinite(a)) and not np.allclose(a, b)

    # Train mode without stochastic depth (it draws different random numbers when scanned), with remat.
    plain = plain.clone(blocks=efficientnet.build_blocks(blocks, 0.25, 1.0, survival_prob=None))
    scanned = plain.clone(scan_blocks=True, remat=True)

    def loss_fn(model):
        def loss(params, batch_stats):
            logits, updates = model.apply({"params": params, "batch_stats": batch_stats}, images, train=True,
                                          mutable=["batch_stats"])
            return jnp.sum(logits**2), updates["batch_stats"]
        return jax.jit(jax.value_and_grad(loss, has_aux=True))

    (loss, stats), grads = loss_fn(plain)(variables["params"], variables["batch_stats"])
    (scan_loss, scan_stats), scan_grads = loss_fn(scanned)(stacked["params"], stacked["batch_stats"])
    np.testing.assert_allclose(scan_loss, loss, rtol=1e-5)
    unstacked = efficientnet.unscan_block_variables({"params": scan_grads, "batch_stats": scan_stats}, plain.blocks)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                           unstacked, {"params": grads, "batch_stats": stats})
