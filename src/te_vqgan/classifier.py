"""The evaluation classifier: colour and digit of a 28x28 window (the paper's text-to-image judge).

The authors judge a generated image by cropping the fixed 28x28 window of each location the
prompt names and asking a classifier with a colour head (4) and a digit head (10) for both;
theirs is a torchvision ResNet-18 whose weights are not public. Ours is a small CNN written
in torch (torchvision is not installable beside our torch pin), trained on the windows of
TextMNIST's train split by `te-vqgan train-classifier`, and saved and loaded the Hub way:

    >>> from te_vqgan.classifier import DigitColourClassifier
    >>> classifier = DigitColourClassifier.from_pretrained("outputs/classifier")  # doctest: +SKIP
    >>> colours, digits = classifier.predict(windows)  # uint8 [N, 28, 28, 3] -> two LongTensors  # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
from huggingface_hub import PyTorchModelHubMixin

from .data.layout import COLOURS, DIGIT_SIZE
from .torch_utils import eval_mode


MAX_TEST_TIME_SHIFT = 4  # pixels; a larger move pushes strokes out of the 28x28 window

__all__ = [
    "DigitColourClassifier",
    "classifier_fingerprint",
    "evaluate_classifier",
    "train_classifier",
    "windows_of_split",
    "windows_to_tensor",
]


def windows_to_tensor(windows) -> torch.Tensor:
    """uint8 windows `[N, 28, 28, 3]` (numpy or torch) -> float `[N, 3, 28, 28]` in [0, 1]."""
    windows = torch.as_tensor(np.asarray(windows)) if not isinstance(windows, torch.Tensor) else windows
    if windows.ndim != 4 or tuple(windows.shape[1:]) != (DIGIT_SIZE, DIGIT_SIZE, 3) or windows.dtype != torch.uint8:
        raise ValueError(
            f"Expected uint8 windows of shape (N, {DIGIT_SIZE}, {DIGIT_SIZE}, 3) (got {windows.dtype} {tuple(windows.shape)})."
        )
    return windows.permute(0, 3, 1, 2).float() / 255.0


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DigitColourClassifier(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="te-vqgan",
    tags=["te-vqgan", "image-classification", "textmnist", "evaluation"],
    repo_url="https://github.com/te-vqgan/te-vqgan",
):
    """A CNN with a colour head and a digit head over a 28x28 RGB window.

    The convolutions see the stroke's intensity (the brightest channel), so the digit head
    cannot tie a shape to a colour: a red 4 in a window is judged by the same features as a
    white 4, and a held-out (colour, digit, location) combination is no harder than a seen
    one. Three stages of two 3x3 conv + BatchNorm + ReLU (`channels` wide), 2x2 max pooling
    after the first two, global average pooling and dropout give the digit head; the colour
    head reads those features and each channel's mean and maximum. Loss: cross-entropy of
    colour + cross-entropy of digit (the authors' rule).

    With `test_time_shift` > 0, `predict` averages the log-probabilities over the window and its
    copies moved by that many pixels up, down, left and right (black fill). Measured on 7,500
    `test` windows: it helps a weaker classifier (24,000 training images, 16 epochs: 46 -> 32
    errors) and not the default one (48,000 images, 4 epochs: 33 -> 35 and 36 -> 38 for two
    seeds), so the default judges the window as it is, as the authors do.

    Args:
        channels (`tuple[int, int, int]`, *optional*, defaults to `(16, 32, 64)`): widths of the stages.
        num_colours (`int`, *optional*, defaults to `4`): white, red, green, blue (`COLOURS` order).
        num_digits (`int`, *optional*, defaults to `10`): digit classes.
        dropout (`float`, *optional*, defaults to `0.2`): before the heads.
        test_time_shift (`int`, *optional*, defaults to `0`): `predict` also judges the window moved
            by this many pixels in each of the four directions and averages; 0 judges it as it is.
    """

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, strict: bool = True, **kwargs):
        """`PyTorchModelHubMixin.from_pretrained`, strict: a local folder must hold this class's
        config (no unknown keys) and `model.safetensors` with every weight, else a one-line error
        (a folder of another model, or with missing weights, would score with a random judge)."""
        import inspect
        import json
        from pathlib import Path

        folder = Path(str(pretrained_model_name_or_path))
        if folder.is_dir():
            config_file, weights = folder / "config.json", folder / "model.safetensors"
            for needed in (config_file, weights):
                if not needed.is_file():
                    raise FileNotFoundError(
                        f"Classifier folder {str(folder)!r} has no {needed.name}: not a `te-vqgan train-classifier` folder."
                    )
            try:
                config = json.loads(config_file.read_text())
            except (ValueError, UnicodeDecodeError) as error:
                raise ValueError(f"Classifier config {str(config_file)!r} is not valid JSON: {error}") from error
            valid = set(inspect.signature(cls.__init__).parameters) - {"self"}
            unknown = sorted(set(config) - valid) if isinstance(config, dict) else ["(not a JSON object)"]
            if unknown:
                raise ValueError(
                    f"Classifier config {str(config_file)!r} has keys {unknown} that DigitColourClassifier does not take "
                    f"(expected some of {sorted(valid)}): a folder of another model?"
                )
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, strict=strict, **kwargs)
        except RuntimeError as error:  # load_state_dict: missing or unexpected weights, other shapes
            first = str(error).splitlines()[0]
            raise ValueError(
                f"The weights in {str(pretrained_model_name_or_path)!r} do not fit a DigitColourClassifier: {first}"
            ) from error

    def __init__(
        self,
        channels: tuple[int, int, int] = (16, 32, 64),
        num_colours: int = len(COLOURS),
        num_digits: int = 10,
        dropout: float = 0.2,
        test_time_shift: int = 0,
    ):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if len(channels) != 3 or min(channels) < 1:
            raise ValueError(f"`channels` must be three positive widths (got {channels}).")
        if num_colours < 1 or num_digits < 1 or not 0 <= dropout < 1:
            raise ValueError(
                f"Expected num_colours, num_digits >= 1 and dropout in [0, 1) (got {num_colours}, {num_digits}, {dropout})."
            )
        if not 0 <= test_time_shift <= MAX_TEST_TIME_SHIFT:
            raise ValueError(
                f"`test_time_shift` must be in [0, {MAX_TEST_TIME_SHIFT}] pixels (got {test_time_shift})."
            )
        self.test_time_shift = int(test_time_shift)
        a, b, c = channels
        self.features = nn.Sequential(
            _block(1, a),
            _block(a, a),
            nn.MaxPool2d(2),  # 14x14
            _block(a, b),
            _block(b, b),
            nn.MaxPool2d(2),  # 7x7
            _block(b, c),
            _block(c, c),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.dropout = nn.Dropout(dropout)
        self.colour_head = nn.Linear(c + 6, num_colours)
        self.digit_head = nn.Linear(c, num_digits)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`pixels` float `[N, 3, 28, 28]` in [0, 1] -> (colour logits `[N, 4]`, digit logits `[N, 10]`)."""
        hidden = self.dropout(self.features(pixels.amax(dim=1, keepdim=True)))
        channel_stats = torch.cat([pixels.mean(dim=(2, 3)), pixels.amax(dim=(2, 3))], dim=1)
        return self.colour_head(torch.cat([hidden, channel_stats], dim=1)), self.digit_head(hidden)

    @torch.no_grad()
    def predict(self, windows, batch_size: int = 512) -> tuple[torch.LongTensor, torch.LongTensor]:
        """Colour ids (`COLOURS` order) and digits of uint8 windows `[N, 28, 28, 3]`, in eval mode
        (log-probabilities averaged over the `test_time_shift` copies)."""
        pixels = windows_to_tensor(windows)
        device = next(self.parameters()).device
        s = self.test_time_shift
        moves = [(0, 0)] + ([(s, 0), (-s, 0), (0, s), (0, -s)] if s else [])
        colours, digits = [], []
        with eval_mode(self):
            for start in range(0, len(pixels), batch_size):
                batch = pixels[start : start + batch_size].to(device)
                padded = nn.functional.pad(batch, (s, s, s, s)) if s else batch
                colour_score = digit_score = 0
                for dy, dx in moves:  # the window moved by (dy, dx), black coming in
                    colour_logits, digit_logits = self(
                        padded[..., s - dy : s - dy + DIGIT_SIZE, s - dx : s - dx + DIGIT_SIZE]
                    )
                    colour_score = colour_score + colour_logits.log_softmax(dim=1)
                    digit_score = digit_score + digit_logits.log_softmax(dim=1)
                colours.append(colour_score.argmax(dim=1).cpu())
                digits.append(digit_score.argmax(dim=1).cpu())
        if not colours:
            return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
        return torch.cat(colours), torch.cat(digits)


def windows_of_split(split) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every digit's 28x28 window in a TextMNIST split (a `datasets.Dataset` with `image` and
    `objects`): uint8 `[M, 28, 28, 3]`, colour ids (`COLOURS` order) and digits."""
    from .evaluation import cut_windows, objects_to_triplets

    windows, colours, digits = [], [], []
    features = split.features
    for example in split:
        truth = objects_to_triplets(example["objects"], features)
        cut, clauses = cut_windows(np.asarray(example["image"].convert("RGB"))[None], [truth])
        windows.append(cut)
        colours += [COLOURS.index(c.colour) for c in clauses]
        digits += [c.digit for c in clauses]
    if not windows:
        raise ValueError("The split holds no example: no window to cut.")
    return np.concatenate(windows), np.asarray(colours, dtype=np.int64), np.asarray(digits, dtype=np.int64)


def _augmented(
    pixels: torch.Tensor, max_shift: int, max_rotation: float, max_scale: float, generator: torch.Generator
) -> torch.Tensor:
    """Each window moved by a random affine map (black fill): a shift of up to `max_shift`
    pixels each way, a rotation of up to `max_rotation` degrees and a scaling by up to
    `max_scale` either way. Generated digits are not always centred, upright or of MNIST's size;
    the rotation stays small enough that a 6 does not turn into a 9."""
    if max_shift == 0 and max_rotation == 0 and max_scale == 0:
        return pixels
    n, size = len(pixels), pixels.shape[-1]
    uniform = lambda: torch.rand(n, generator=generator) * 2 - 1  # noqa: E731
    angle = torch.deg2rad(uniform() * max_rotation)
    scale = 1 + uniform() * max_scale
    shift = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=generator).float() * 2 / size
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = nn.functional.affine_grid(theta.to(pixels), list(pixels.shape), align_corners=False)
    return nn.functional.grid_sample(pixels, grid, padding_mode="zeros", align_corners=False)


def evaluate_classifier(classifier: DigitColourClassifier, windows, colours, digits) -> dict[str, float]:
    """Colour, digit and both-right accuracy on labelled windows."""
    predicted_colours, predicted_digits = classifier.predict(windows)
    colour_right = predicted_colours.numpy() == np.asarray(colours)
    digit_right = predicted_digits.numpy() == np.asarray(digits)
    return {
        "colour_accuracy": float(colour_right.mean()),
        "digit_accuracy": float(digit_right.mean()),
        "both_accuracy": float((colour_right & digit_right).mean()),
        "windows": int(len(colour_right)),
    }


def train_classifier(
    windows,
    colours,
    digits,
    epochs: int = 4,
    batch_size: int = 128,
    learning_rate: float = 2e-3,
    max_shift: int = 2,
    max_rotation: float = 10.0,
    max_scale: float = 0.1,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    **model_kwargs,
) -> DigitColourClassifier:
    """Train a `DigitColourClassifier` on labelled windows: Adam, one-cycle learning rate,
    random shifts (up to `max_shift` pixels), rotations (up to `max_rotation` degrees) and
    scalings (up to `max_scale` either way), loss = CE(colour) + CE(digit)."""
    from tqdm.auto import tqdm

    if (
        epochs < 1
        or batch_size < 1
        or not learning_rate > 0
        or max_shift < 0
        or not 0 <= max_rotation <= 45
        or not 0 <= max_scale < 1
    ):
        raise ValueError(
            f"Expected epochs >= 1, batch_size >= 1, learning_rate > 0, max_shift >= 0, max_rotation in [0, 45] and "
            f"max_scale in [0, 1) (got {epochs}, {batch_size}, {learning_rate}, {max_shift}, {max_rotation}, {max_scale})."
        )
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    pixels = windows_to_tensor(windows)
    colours, digits = torch.as_tensor(np.asarray(colours)), torch.as_tensor(np.asarray(digits))
    if not len(pixels) == len(colours) == len(digits) or len(pixels) == 0:
        raise ValueError(
            f"Expected as many colours and digits as windows, at least one (got {len(pixels)}, {len(colours)}, {len(digits)})."
        )
    model = DigitColourClassifier(**model_kwargs).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    steps_per_epoch = (len(pixels) + batch_size - 1) // batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=learning_rate, total_steps=epochs * steps_per_epoch
    )
    model.train()
    bar = tqdm(total=epochs * steps_per_epoch, desc="classifier", unit="step", disable=not progress)
    for _ in range(epochs):
        order = torch.randperm(len(pixels), generator=generator)
        for start in range(0, len(pixels), batch_size):
            batch = order[start : start + batch_size]
            inputs = _augmented(pixels[batch], max_shift, max_rotation, max_scale, generator).to(device)
            colour_logits, digit_logits = model(inputs)
            loss = nn.functional.cross_entropy(colour_logits, colours[batch].to(device)) + nn.functional.cross_entropy(
                digit_logits, digits[batch].to(device)
            )
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"The classifier's loss is {loss.item()} at step {bar.n}: training diverged; nothing is saved."
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
    bar.close()
    return model.eval()


def classifier_fingerprint(folder) -> str:
    """SHA-256 of a classifier folder's config and weights: what an evaluation records, so that a
    rerun with another classifier is not mistaken for the same evaluation."""
    import hashlib
    from pathlib import Path

    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        path = Path(folder) / name
        digest.update(path.read_bytes() if path.is_file() else b"")
    return digest.hexdigest()
