"""Classify images with a pretrained effnet_jax checkpoint: top-k ImageNet labels and probabilities.

  python -m effnet_jax.predict --model efficientnet-lite0 --weights lite0/ cat.jpg dog.png --top 5
  python -m effnet_jax.predict --model efficientnet-b0 --weights b0/ cat.jpg --json

Each image goes through the reference's eval preprocessing (center crop with 32 px padding, bicubic
resize to the model's resolution; ``effnet_jax.data.preprocessing.preprocess_for_eval``) and the
family's normalisation, exactly as in evaluation. ``--weights`` is a directory written by
``python -m effnet_jax.convert``. Exit status 2 for unreadable images or weights of another model.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys

import numpy as np


class ImageError(ValueError):
    """An input is missing or is not a decodable image."""


@dataclasses.dataclass
class Prediction:
    image: str
    labels: list[int]
    names: list[str]
    probabilities: list[float]


def load_image(path: str, image_size: int, crop_padding: int = 32) -> np.ndarray:
    """float32 [image_size, image_size, 3] in [0, 255], preprocessed as for evaluation."""
    import tensorflow as tf
    from effnet_jax.data import preprocessing
    if not os.path.isfile(path):
        raise ImageError(f'{path}: no such file.')
    with open(path, 'rb') as handle:
        encoded = handle.read()
    try:
        image = preprocessing.preprocess_for_eval(tf.constant(encoded), image_size, crop_padding)
    except (tf.errors.InvalidArgumentError, ValueError) as error:
        # TF prefixes '{{function_node ...}}' and appends '[Op:DecodeImage]'; keep the sentence between.
        message = re.sub(r'\{\{.*?\}\}|\[Op:.*$', '', str(error).strip().splitlines()[0]).strip()
        raise ImageError(f'{path}: not a readable image: {message or type(error).__name__}') from error
    return image.numpy()


def class_names(num_classes: int) -> list[str]:
    """ImageNet names for 1000 classes (1001: label 0 is 'background'), else 'class N'."""
    from effnet_jax.data.imagenet_classes import IMAGENET_CLASSES
    if num_classes == 1000:
        return list(IMAGENET_CLASSES)
    if num_classes == 1001:
        return ['background'] + list(IMAGENET_CLASSES)
    return [f'class {index}' for index in range(num_classes)]


def predict(model, variables, images: np.ndarray, family: str, top: int = 5):
    """(top labels [N, k], their probabilities [N, k]) for un-normalised [N, H, W, 3] images."""
    import jax
    from effnet_jax.data import normalization_constants, normalize_images

    @jax.jit
    def probabilities(variables, images):
        normalized = normalize_images(images, *normalization_constants(family))
        return jax.nn.softmax(model.apply(variables, normalized, train=False), axis=-1)

    probs = np.asarray(probabilities(variables, images))
    top = min(top, probs.shape[-1])
    labels = np.argsort(-probs, axis=-1)[:, :top]
    return labels, np.take_along_axis(probs, labels, axis=-1)


def classify_files(model_name: str, weights: str, paths: list[str], *, top: int = 5,
                   image_size: int | None = None, crop_padding: int = 32) -> list[Prediction]:
    """Loads the checkpoint, preprocesses every image (all are checked before the model runs)."""
    from effnet_jax.pretrained import load_pretrained, model_family
    images, errors = [], []
    model, variables = load_pretrained(model_name, weights)
    size = image_size or model.resolution
    for path in paths:
        try:
            images.append(load_image(path, size, crop_padding))
        except ImageError as error:
            errors.append(str(error))
    if errors:
        raise ImageError('\n'.join(errors))
    labels, probs = predict(model, variables, np.stack(images), model_family(model_name), top)
    names = class_names(model.num_classes)
    return [Prediction(path, row.tolist(), [names[i] for i in row], [float(p) for p in prob])
            for path, row, prob in zip(paths, labels, probs)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python -m effnet_jax.predict', description=__doc__.splitlines()[0])
    parser.add_argument('images', nargs='+', metavar='IMAGE', help='image files (JPEG, PNG, GIF, BMP, WebP).')
    parser.add_argument('--model', required=True, help="e.g. 'efficientnet-b0'.")
    parser.add_argument('--weights', required=True, help='a directory written by python -m effnet_jax.convert.')
    parser.add_argument('--top', type=int, default=5, help='how many classes to show per image (default 5).')
    parser.add_argument('--image-size', type=int, default=None,
                        help="input side in pixels (default: the model's resolution, e.g. 224 for b0).")
    parser.add_argument('--json', action='store_true', help='print one JSON list instead of text.')
    args = parser.parse_args(argv)
    if args.top < 1:
        parser.error('--top must be at least 1.')
    try:
        predictions = classify_files(args.model, args.weights, args.images, top=args.top, image_size=args.image_size)
    except (ImageError, FileNotFoundError, ValueError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([dataclasses.asdict(p) for p in predictions], indent=2))
        return 0
    for prediction in predictions:
        print(prediction.image)
        for label, name, probability in zip(prediction.labels, prediction.names, prediction.probabilities):
            print(f'  {probability:7.2%}  {label:4d}  {name}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
