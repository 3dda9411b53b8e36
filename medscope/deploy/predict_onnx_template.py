"""Classify images with an ONNX model exported by medscope's quantize.py.

    python predict_onnx.py image.png
    python predict_onnx.py images.npy --model model_int8_static.onnx

Input: raw pixel values 0..255, as stored in the MedMNIST .npz files (uint8).
A .npy file holds one image laid out (H, W), (C, H, W) or (H, W, C) - for 3D
volumes (D, H, W) or (C, D, H, W) - or a batch of them with a leading axis.
A PNG/JPEG is read with Pillow, converted to the model's channels and resized
to the model's size. The ONNX graph normalizes by itself (x * 2/255 - 1, the
training normalization), so the input is the pixels as float32, nothing else.

Needs numpy and onnxruntime (and Pillow for images).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

# --- model constants (filled in by quantize.py) ---
MODEL_FILE = "model_fp32.onnx"
DATASET = "breastmnist"
TASK = "binary-class"
CLASS_NAMES = ["class 0", "class 1"]
IN_CHANNELS = 1
SPATIAL_DIMS = 2
SIZE = 28
INPUT_NAME = "image"
# --- end of model constants ---

PIXEL_MIN, PIXEL_MAX = 0.0, 255.0  # the graph computes x * 2/255 - 1 itself
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


class InputError(Exception):
    pass


def as_batch(array: np.ndarray) -> np.ndarray:
    """Any accepted layout -> float32 (N, C, *spatial) pixels in 0..255, every one finite.

    Pixels are integers or real floats: a complex array would lose its imaginary part, a bool
    or object array is no image, and a NaN or infinite pixel would give a NaN probability."""
    spatial = (SIZE,) * SPATIAL_DIMS
    a = np.asarray(array)
    if a.dtype.kind not in "iuf":  # signed and unsigned integers, real floats
        raise InputError(f"expected integer or real pixel values, got dtype {a.dtype}")
    if a.shape[-SPATIAL_DIMS:] == spatial:  # channels first, or no channel axis
        lead = a.shape[:-SPATIAL_DIMS]
        if lead in ((), (1,)) and IN_CHANNELS == 1:
            a = a.reshape((1, 1) + spatial)
        elif lead == (IN_CHANNELS,):
            a = a[None]
        elif len(lead) == 1 and IN_CHANNELS == 1:
            a = a[:, None]
        elif len(lead) != 2 or lead[1] != IN_CHANNELS:
            a = None
    elif SPATIAL_DIMS == 2 and a.shape[-3:] == spatial + (IN_CHANNELS,) and a.ndim in (3, 4):
        a = np.moveaxis(a.reshape((-1,) + a.shape[-3:]), -1, 1)  # channels last -> first
    else:
        a = None
    if a is None:
        shape = " x ".join(map(str, spatial))
        raise InputError(f"array of shape {np.shape(array)} is not a {IN_CHANNELS}-channel {shape} "
                         f"{'volume' if SPATIAL_DIMS == 3 else 'image'} (or a batch of them)")
    if a.size == 0:
        raise InputError("the array holds no images")
    finite = np.isfinite(a)  # checked in the file's own type: a cast would first turn 1e300 into inf
    if not finite.all():
        raise InputError(f"{a.size - int(finite.sum())} pixel value(s) are not finite numbers (NaN or infinite); "
                         "expected raw pixels in 0..255")
    if a.min() < PIXEL_MIN or a.max() > PIXEL_MAX:
        raise InputError(f"pixel values span {a.min():g}..{a.max():g}; expected raw pixels in 0..255")
    a = a.astype(np.float32)
    if not np.issubdtype(np.asarray(array).dtype, np.integer) and a.max() <= 1.0:
        print("note: values are all <= 1; this model expects 0..255 pixels, not 0..1", file=sys.stderr)
    return a


def load_input(path: Path) -> np.ndarray:
    if not path.is_file():
        raise InputError(f"{path} not found")
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:  # an object array, a damaged or truncated file
            raise InputError(f"{path} is not a readable .npy file ({exc})") from None
        return as_batch(array)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        if SPATIAL_DIMS == 3:
            raise InputError("this is a 3D model: give the volume as a .npy file")
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                image = image.convert("L" if IN_CHANNELS == 1 else "RGB")
                if image.size != (SIZE, SIZE):
                    image = image.resize((SIZE, SIZE), Image.BILINEAR)
                return as_batch(np.asarray(image))
        except (UnidentifiedImageError, OSError) as exc:
            raise InputError(f"{path} is not a readable image ({exc})") from None
    raise InputError(f"{path}: expected a .npy file or an image ({', '.join(sorted(IMAGE_SUFFIXES))})")


TEMPERATURE_FILE = "temperature.json"  # written by explain.py calibrate, copied here by quantize.py


def load_temperature(path: Path):
    """The temperature fitted on validation (a number, or one per label), or None without the file."""
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if not isinstance(record, dict) or record.get("task") != TASK:
        raise InputError(f"{path} is for a {record.get('task') if isinstance(record, dict) else '?'} task, "
                         f"not {TASK}")
    temperature = np.asarray(record["temperature"], dtype=np.float64)
    if not (np.isfinite(temperature).all() and (temperature > 0).all()):
        raise InputError(f"{path}: the temperature must be a finite number > 0, got {record['temperature']}")
    return temperature


def scores(logits: np.ndarray, temperature=None) -> np.ndarray:
    """Sigmoid per label for multi-label tasks, softmax over classes otherwise, of ``logits / T``.

    The temperature changes how sure the probabilities are, never which class wins."""
    logits = logits.astype(np.float64)
    if temperature is not None:
        logits = logits / temperature
    if TASK.startswith("multi-label"):
        return 1.0 / (1.0 + np.exp(-logits))
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def describe(probabilities: np.ndarray) -> str:
    if TASK.startswith("multi-label"):
        found = [f"{CLASS_NAMES[i]} ({p:.3f})" for i, p in enumerate(probabilities) if p > 0.5]
        return ", ".join(found) if found else "no finding above 0.5"
    k = int(np.argmax(probabilities))
    return f"{CLASS_NAMES[k]} (probability {probabilities[k]:.3f})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=f"Classify {DATASET} inputs with an ONNX model.")
    parser.add_argument("inputs", nargs="+", type=Path, help=".npy or image files")
    parser.add_argument("--model", type=Path, default=Path(__file__).resolve().parent / MODEL_FILE,
                        help=f"ONNX file (default: {MODEL_FILE} beside this script)")
    parser.add_argument("--no-temperature", action="store_true",
                        help=f"ignore {TEMPERATURE_FILE} (calibrated probabilities) even where it is present")
    args = parser.parse_args(argv)
    import onnxruntime as ort

    try:
        temperature = None if args.no_temperature else load_temperature(args.model.parent / TEMPERATURE_FILE)
    except (InputError, ValueError, KeyError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    if not args.model.is_file():
        print(f"error: {args.model} not found", file=sys.stderr)
        return 2
    session = ort.InferenceSession(str(args.model), providers=["CPUExecutionProvider"])
    for path in args.inputs:
        try:
            batch = load_input(path)
        except InputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        probabilities = scores(session.run(None, {INPUT_NAME: batch})[0], temperature)
        for i, row in enumerate(probabilities):
            name = path.name if len(probabilities) == 1 else f"{path.name}[{i}]"
            print(f"{name}: {describe(row)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
