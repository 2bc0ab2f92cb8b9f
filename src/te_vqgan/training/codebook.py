"""Remedies against codebook collapse that act during training: k-means initialisation of the
codes from encoder outputs, and restarts of dead codes.

Both read the encoder's outputs on the current batch (gathered over processes, so that every
process computes the same new codebook) and write the codes in place under `no_grad`. Both
are stateless between steps: what they do at a step depends only on the weights and the
batch, so a resumed run does exactly what the uninterrupted one did.

Options of the model itself (the orthogonal term on active codes only, a cosine lookup,
SimVQ's reparameterised codebook) are `TEVQModel` config keys; see `TEVectorQuantizer`.
"""

from __future__ import annotations

import torch


__all__ = ["encoder_latents", "init_codebook_kmeans", "kmeans", "restart_dead_codes"]


def kmeans(
    vectors: torch.Tensor,
    num_clusters: int,
    num_iterations: int = 20,
    spherical: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Lloyd's k-means with k-means++ seeding (Arthur & Vassilvitskii, 2007) on `vectors` `(N, d)`.

    Args:
        vectors (`torch.Tensor` of shape `(N, d)`): the points, N >= `num_clusters`.
        num_clusters (`int`): K.
        num_iterations (`int`, *optional*, defaults to `20`): Lloyd iterations after seeding.
        spherical (`bool`, *optional*, defaults to `False`): cluster directions (cosine
            similarity, unit-norm centroids), for a cosine codebook lookup.
        generator (`torch.Generator`, *optional*): the seeding's randomness.

    Returns:
        `torch.Tensor` of shape `(K, d)`, float32. A cluster that empties keeps its centroid.
    """
    if vectors.ndim != 2 or len(vectors) < num_clusters:
        raise ValueError(
            f"k-means needs at least {num_clusters} vectors of shape (N, d) (got shape {tuple(vectors.shape)})."
        )
    points = vectors.float()
    if spherical:
        points = torch.nn.functional.normalize(points, dim=1)
    first = torch.randint(len(points), (1,), generator=generator).to(points.device)
    centroids = points[first]
    nearest = (points - centroids[0]).pow(2).sum(dim=1)
    for _ in range(1, num_clusters):  # k-means++: the next seed drawn in proportion to D^2
        weights = nearest / nearest.sum() if nearest.sum() > 0 else torch.full_like(nearest, 1.0 / len(nearest))
        pick = torch.multinomial(weights.cpu(), 1, generator=generator).to(points.device)
        centroids = torch.cat([centroids, points[pick]])
        nearest = torch.minimum(nearest, (points - points[pick]).pow(2).sum(dim=1))
    for _ in range(num_iterations):
        assignment = torch.cdist(points, centroids).argmin(dim=1)
        sums = torch.zeros_like(centroids).index_add_(0, assignment, points)
        counts = torch.bincount(assignment, minlength=num_clusters).unsqueeze(1)
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
        if spherical:
            centroids = torch.nn.functional.normalize(centroids, dim=1)
    return centroids


@torch.no_grad()
def encoder_latents(accelerator, model, images: torch.Tensor) -> torch.Tensor:
    """The encoder's outputs on `images`, as the quantizer compares them, gathered over
    processes: `(N, d)` float32, the same on every process."""
    unwrapped = accelerator.unwrap_model(model)
    with accelerator.autocast():
        latents = unwrapped.quantize.prepare_latents(unwrapped.encode(images).latents)
    flat = latents.float().permute(0, 2, 3, 1).reshape(-1, latents.shape[1]).contiguous()
    return accelerator.gather(flat)


def _check_direct(quantizer, remedy: str) -> None:
    if quantizer.parametrization != "direct":
        raise ValueError(
            f"{remedy} writes the codes directly; it does not apply to a {quantizer.parametrization!r} codebook "
            "(whose codes are a learnt projection)."
        )


@torch.no_grad()
def init_codebook_kmeans(
    model, latents: torch.Tensor, generator: torch.Generator | None = None, num_iterations: int = 20
) -> None:
    """Set the codes of `model` (a `TEVQModel`) to the k-means centroids of `latents` `(N, d)`.

    Initialising the codebook from data rather than U(-1/K, 1/K) (whose codes are much smaller
    than the encoder's outputs at the start, so that a few codes win every lookup:
    results/collapse_ablation/README.md) is
    SoundStream's remedy (Zeghidour et al., 2021, Sec. III-C) and Łańcucki et al.'s
    ("Robust Training of Vector Quantized Bottleneck Models", IJCNN 2020).
    """
    quantizer = model.quantize
    _check_direct(quantizer, "k-means initialisation")
    centroids = kmeans(
        latents,
        quantizer.num_embeddings,
        num_iterations=num_iterations,
        spherical=quantizer.lookup == "cosine",
        generator=generator,
    )
    quantizer.embedding.weight.copy_(centroids.to(quantizer.embedding.weight))


@torch.no_grad()
def restart_dead_codes(
    model, latents: torch.Tensor, min_count: int = 1, generator: torch.Generator | None = None
) -> int:
    """Move every code chosen fewer than `min_count` times by `latents` `(N, d)` onto one of
    those latents, drawn at random (Dhariwal et al., "Jukebox", 2020, Sec. 2.2; Łańcucki et
    al., 2020). Returns the number of codes restarted.
    """
    quantizer = model.quantize
    _check_direct(quantizer, "Dead-code restarting")
    codes = quantizer._lookup_codes(quantizer.codes.float())
    distances = codes.pow(2).sum(dim=1) - 2.0 * latents @ codes.t()
    counts = torch.bincount(distances.argmin(dim=1), minlength=quantizer.num_embeddings)
    dead = torch.nonzero(counts < min_count).flatten()
    if len(dead):
        picks = torch.randint(len(latents), (len(dead),), generator=generator).to(latents.device)
        quantizer.embedding.weight[dead.to(quantizer.embedding.weight.device)] = latents[picks].to(
            quantizer.embedding.weight
        )
    return len(dead)
