"""`te-vqgan evaluate`: the paper's text-to-image and image-to-text accuracy of a trained pipeline.

    te-vqgan evaluate --pipeline outputs/generator --classifier outputs/classifier \
        --dataset textmnist --mnist-dir ../shared/data/mnist --splits test,test_seen --output-dir outputs/eval

For each split, on its first `--num-examples` images: text-to-image (each image's first
caption is the prompt; the classifier judges the window of each clause) and image-to-text
(the generated caption is parsed; a clause counts if location, colour and digit match),
bucketed Quad1..Quad4 and Centre, plus the sanity rows: the ground-truth images through the
text-to-image evaluator and the ground-truth captions through the image-to-text evaluator
(both must be >= 0.99), and the quantizer's reconstructions of the ground-truth images
through the text-to-image evaluator (the ceiling a perfect generator could reach with it).
Writes `evaluation.json` and, per split, `{split}-samples.png` (prompts under generated
images) and `{split}-captions.png` (generated captions under test images).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..options import add_output_dir_option
from . import add_command


SANITY_FLOOR = 0.99


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "evaluate",
        help="Text-to-image and image-to-text accuracy of a pipeline (bucketed as in the paper), with sanity rows and figures.",
        description=__doc__,
    )
    parser.add_argument(
        "--pipeline",
        required=True,
        help="A TextToImagePipeline folder (training/train_generator.py's output) or Hub id.",
    )
    parser.add_argument("--classifier", required=True, help="A `te-vqgan train-classifier` folder or Hub id.")
    parser.add_argument(
        "--dataset", default="textmnist", help="'textmnist' (built here), a build-dataset folder or a Hub id."
    )
    parser.add_argument("--mnist-dir", default=None, help="Folder of the MNIST .gz files (for --dataset textmnist).")
    parser.add_argument(
        "--num-test",
        type=int,
        default=3_000,
        help="Images in test and test_seen when building TextMNIST (default 3000).",
    )
    parser.add_argument("--dataset-seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=None, help="datasets cache folder.")
    parser.add_argument("--splits", default="test,test_seen", help="Comma-separated splits (default test,test_seen).")
    parser.add_argument("--num-examples", type=int, default=500, help="Images per split (default 500).")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="Sampling seed (default 0).")
    parser.add_argument(
        "--top-k-fraction",
        type=float,
        default=0.1,
        help="Sampling keeps this fraction of the vocabulary (authors 0.1).",
    )
    parser.add_argument("--temperature", type=float, default=1.0, help="Sampling temperature (authors 1.0).")
    parser.add_argument(
        "--num-candidates",
        type=int,
        default=1,
        help="Samples per input, the one the generator's other direction scores highest kept (authors 1).",
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available).")
    add_output_dir_option(parser, help="Folder for evaluation.json and the figures (created).")
    parser.set_defaults(func=run)


def evaluate_pipeline(
    pipeline: str,
    classifier: str,
    output,
    *,
    dataset: str = "textmnist",
    splits=("test", "test_seen"),
    num_examples: int = 500,
    batch_size: int = 64,
    seed: int = 0,
    top_k_fraction: float = 0.1,
    temperature: float = 1.0,
    num_candidates: int = 1,
    device=None,
    mnist_dir=None,
    num_test: int = 3_000,
    dataset_seed: int = 0,
    cache_dir=None,
) -> dict:
    """Text-to-image and image-to-text accuracy of the pipeline folder `pipeline` on `splits`, judged
    by `classifier`, with the sanity rows and figures; writes `output/evaluation.json` (returned)."""
    from ..classifier import DigitColourClassifier, classifier_fingerprint
    from ..data.tokenized import load_evaluation_splits
    from ..files import write_json_atomic
    from ..generation.sampling import _check_sampling, check_num_candidates
    from ..loading import resolve_device
    from ..pipelines import TextToImagePipeline

    if num_examples < 1 or batch_size < 1:
        raise ValueError(f"--num-examples and --batch-size must be >= 1 (got {num_examples}, {batch_size}).")
    _check_sampling(temperature, top_k_fraction)  # the pipelines' own checks, before any work
    check_num_candidates(num_candidates, "--num-candidates")
    splits = list(splits)
    device = resolve_device(device)
    generator_pipeline = TextToImagePipeline.from_pretrained(pipeline).to(device)
    judge = DigitColourClassifier.from_pretrained(classifier).to(device)
    data = load_evaluation_splits(
        dataset, num_test=num_test, seed=dataset_seed, mnist_dir=mnist_dir, cache_dir=cache_dir
    )
    missing = [s for s in splits if s not in data]
    if missing or not splits:
        raise ValueError(
            f"--splits {','.join(splits)!r}: {missing or 'none given'} not in the dataset (splits: {sorted(data)})."
        )
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    sampling = {"top_k_fraction": top_k_fraction, "temperature": temperature, "num_candidates": num_candidates}
    results = {
        split: evaluate_split(
            generator_pipeline, judge, data[split], num_examples, batch_size, seed, output / split, sampling=sampling
        )
        for split in splits
    }
    record = {
        "pipeline": str(pipeline),
        "classifier": str(classifier),
        "classifier_fingerprint": classifier_fingerprint(classifier),
        "sampling": sampling,
        "splits": results,
    }
    write_json_atomic(output / "evaluation.json", record)
    return record


def run(args) -> int:
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    output = Path(args.output)
    record = evaluate_pipeline(
        args.pipeline,
        args.classifier,
        output,
        dataset=args.dataset,
        splits=splits,
        num_examples=args.num_examples,
        batch_size=args.batch_size,
        seed=args.seed,
        top_k_fraction=args.top_k_fraction,
        temperature=args.temperature,
        num_candidates=args.num_candidates,
        device=args.device,
        mnist_dir=args.mnist_dir,
        num_test=args.num_test,
        dataset_seed=args.dataset_seed,
        cache_dir=args.cache_dir,
    )
    for split, result in record["splits"].items():
        print(
            f"{split}: text-to-image {result['t2i']['accuracy']:.3f}  image-to-text {result['i2t']['accuracy']:.3f}  "
            f"(sanity: images {result['sanity']['t2i_ground_truth']:.3f}, captions {result['sanity']['i2t_ground_truth']:.3f}, "
            f"quantizer ceiling {result['sanity']['t2i_reconstructions']:.3f}, input ignored "
            f"{_figure(result['sanity']['t2i_prompt_ignored'])} / {_figure(result['sanity']['i2t_image_ignored'])})"
        )
    print(f"results: {output / 'evaluation.json'}")
    return 0


def _figure(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def quantizer_round_trip(vqmodel, images: np.ndarray, batch_size: int = 64):
    """`images` (uint8 `[N, H, W, 3]`) through the quantizer: their code indices (`[N, h, w]`) and the
    images decoded from them (uint8, as `images`)."""
    import torch

    from ..images import images_to_tensor, tensor_to_images
    from ..models.stock_vq_model import as_tokenizer

    quantizer = as_tokenizer(vqmodel)
    indices, reconstructions = [], []
    with torch.no_grad():
        for chunk in images_to_tensor(images).split(batch_size):
            codes = quantizer.encode_to_indices(chunk.to(vqmodel.device, vqmodel.dtype))
            indices.append(codes.cpu())
            reconstructions.append(tensor_to_images(quantizer.decode_indices(codes)))
    return torch.cat(indices), np.concatenate(reconstructions)


def reconstruction_scores(vqmodel, images: np.ndarray, truths, classifier, batch_size: int = 64):
    """The quantizer's ceiling: its reconstructions of `images` (`quantizer_round_trip`) through the
    text-to-image evaluator, a `BucketedAccuracy`; what a generator that wrote each image's own tokens
    would score."""
    from ..evaluation import text_to_image_scores

    return text_to_image_scores(quantizer_round_trip(vqmodel, images, batch_size)[1], truths, classifier)


def evaluate_split(
    pipeline,
    classifier,
    split,
    num_examples: int,
    batch_size: int,
    seed: int,
    figure_prefix: Path | None = None,
    sampling: dict | None = None,
) -> dict:
    """Both directions, the three sanity rows and the chance level on the first `num_examples` of `split`
    (`sampling`: the pipelines' `top_k_fraction`, `temperature` and `num_candidates`, the authors' 0.1, 1.0
    and 1 by default)."""
    import torch

    from ..evaluation import caption_variant, image_to_text_scores, objects_to_triplets, text_to_image_scores
    from ..pipelines import ImageToTextPipeline
    from ..visualization import save_captioned_images

    n = min(num_examples, len(split))
    examples = split.select(range(n))
    truths = [objects_to_triplets(objects, split.features) for objects in examples["objects"]]
    prompts = [captions[0] for captions in examples["captions"]]
    images = np.stack([np.asarray(image.convert("RGB")) for image in examples["image"]])
    variant = caption_variant(split.features)

    sampling = dict(sampling or {})
    generated = pipeline(
        prompts, generator=torch.Generator().manual_seed(seed), batch_size=batch_size, output_type="np", **sampling
    ).images
    t2i = text_to_image_scores(generated, truths, classifier)
    captioner = ImageToTextPipeline(
        vqmodel=pipeline.vqmodel, generator=pipeline.generator, tokenizer=pipeline.tokenizer
    )
    captions = captioner(
        images, generator=torch.Generator().manual_seed(seed), batch_size=batch_size, **sampling
    ).captions
    i2t = image_to_text_scores(captions, truths, variant=variant)

    sanity = {
        "t2i_ground_truth": text_to_image_scores(images, truths, classifier).accuracy,
        "i2t_ground_truth": image_to_text_scores(prompts, truths, variant=variant).accuracy,
        "t2i_reconstructions": reconstruction_scores(
            pipeline.vqmodel, images, truths, classifier, batch_size
        ).accuracy,
    }
    # Chance level on this split: what an output that ignores its input scores. Each example is
    # judged against another example's ground truth (image, or caption): right where the two
    # happen to share a clause, which the compositional test split makes more likely than uniform.
    other = np.roll(np.arange(n), 1)
    sanity["t2i_prompt_ignored"] = text_to_image_scores(images[other], truths, classifier).accuracy if n > 1 else None
    sanity["i2t_image_ignored"] = (
        image_to_text_scores([prompts[i] for i in other], truths, variant=variant).accuracy if n > 1 else None
    )
    sanity["passed"] = sanity["t2i_ground_truth"] >= SANITY_FLOOR and sanity["i2t_ground_truth"] >= SANITY_FLOOR
    if figure_prefix is not None:
        shown = min(8, n)
        save_captioned_images(
            generated[:shown],
            [f"prompt: {p}" for p in prompts[:shown]],
            f"{figure_prefix}-samples.png",
            title="text-to-image: the prompt under each generated image",
            columns=4,
        )
        save_captioned_images(
            images[:shown],
            [f"generated: {c}" for c in captions[:shown]],
            f"{figure_prefix}-captions.png",
            title="image-to-text: the generated caption under each test image",
            columns=4,
        )
    return {
        "examples": n,
        "t2i": t2i.as_dict(),
        "i2t": i2t.as_dict(),
        "sanity": sanity,
        "samples": [{"prompt": p, "caption": c} for p, c in zip(prompts[:8], captions[:8])],
    }
