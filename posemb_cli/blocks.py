"""Row-block reductions of attention probabilities in few passes: what `stats` (and any per-layer view that reads
blocks from posemb's backend) sums per query row, computed with one matrix product per block instead of one
elementwise pass per statistic.

For a block of query rows first..last − 1 of a layer's maps, a (batch, heads, rows, keys), one product

    a · W,   W = [key masks | far |first − j| | far-left | far-right | one column per distance bin (far keys)]

gives every key-mask mass (attention.mass_on), most of `distance` (Σ_j a[i,j]·|i − j|) and most of
`distance_profile` (the mass of each |i − j| bin). "Far" keys are those every row of the block puts in the same
distance bin (and on the same side): for them |i − j| = |first − j| ± (i − first), so their distance is one column
plus (i − first) times the far-left minus the far-right mass, and their bin is the key's own. The few "near" keys
(the block's own rows, and keys near a bin edge, about 2 × rows per edge) are gathered and summed exactly per row.
Every term is a sum of non-negative products, so the float32 product keeps the definitions' precision
(tests/test_stats.py checks these against `attention.distance_torch` and a per-row loop).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FAR_DISTANCE, FAR_LEFT, FAR_RIGHT = 0, 1, 2  # the plan's first columns; the distance bins follow
PLAN_COLUMNS = 3
PRODUCT_WIDTH = 16  # `reduce`'s product runs on a multiple of this many columns


@dataclass(frozen=True)
class Plan:
    """The block-independent-of-heads parts of one block's reductions."""

    first: int
    rows: int
    columns: Any  # (keys, PLAN_COLUMNS + bins) float32: far keys' |first − j|, far-left / far-right, bin one-hot
    near: Any  # (M,) long: the near keys
    near_distance: Any  # (rows, M) float32: |i − j| of the block's rows and the near keys
    near_bin: Any  # (rows, M) long: their distance bin
    offset: Any  # (rows,) float32: i − first
    bins: int


def bin_lookup(edges: list[list[int]], length: int, device: Any) -> Any:
    """The distance bin of each offset 0..length − 1 (edges: [first, last] offset of each bin, as
    `stats.distance_bins`)."""
    import torch

    lows = torch.tensor([low for low, _ in edges], dtype=torch.long, device=device)
    return torch.searchsorted(lows, torch.arange(max(1, length), device=device), right=True) - 1


def plan(first: int, rows: int, keys: int, lookup: Any, bins: int) -> Plan:
    """The plan of rows first..first + rows − 1 against keys 0..keys − 1 (`lookup`: `bin_lookup` of at least
    max(keys, first + rows) offsets)."""
    import torch

    device = lookup.device
    j = torch.arange(keys, device=device)
    last = first + rows - 1
    left, right = j < first, j > last
    near_bin_first = lookup[(first - j).abs()]
    near_bin_last = lookup[(last - j).abs()]
    far = (left | right) & (near_bin_first == near_bin_last)
    columns = torch.zeros(keys, PLAN_COLUMNS + bins, dtype=torch.float32, device=device)
    columns[:, FAR_DISTANCE] = torch.where(far, (first - j).abs(), 0).float()
    columns[:, FAR_LEFT] = (far & left).float()
    columns[:, FAR_RIGHT] = (far & right).float()
    far_keys = far.nonzero().flatten()
    columns[far_keys, PLAN_COLUMNS + near_bin_first[far_keys]] = 1.0
    near = (~far).nonzero().flatten()
    i = torch.arange(first, first + rows, device=device)[:, None]
    distance = (i - near[None, :]).abs()
    return Plan(
        first=first,
        rows=rows,
        columns=columns,
        near=near,
        near_distance=distance.float(),
        near_bin=lookup[distance],
        offset=torch.arange(rows, device=device, dtype=torch.float32),
        bins=bins,
    )


def reduce(block: Any, the_plan: Plan, key_masks: Any) -> tuple[Any, Any, Any]:
    """One block a (batch, heads, rows, keys) → (masses (batch, heads, rows, masks): Σ_j a[i,j]·mask[j] for each
    column of key_masks (batch, keys, masks); distance (batch, heads, rows); profile (batch, heads, rows, bins)),
    float32."""
    import torch

    size, heads, rows, keys = block.shape
    masks = key_masks.shape[-1]
    weights = torch.cat([key_masks.to(block.dtype), the_plan.columns.expand(size, -1, -1)], dim=-1)
    flat = block.reshape(size, heads * rows, keys)
    # the product is compute-bound (a few dozen columns against thousands of keys): columns that are zero for every
    # key (a segment or token kind the batch lacks, distance bins with no far key in this block) are left out, and
    # the rest padded with zero columns to a multiple of PRODUCT_WIDTH, the width the CPU's kernels do fastest (on
    # 1,024 × 4,128 probabilities: 1.2 ms for 16 columns, 1.9 for 24 or 32, 3.1 for 15, 2.7 for 8)
    columns = weights.shape[-1]
    used = weights.reshape(-1, columns).any(dim=0).nonzero().flatten()
    width = -(-max(1, len(used)) // PRODUCT_WIDTH) * PRODUCT_WIDTH
    if width >= columns:
        product = torch.bmm(flat, weights)
    else:
        narrow = weights.new_zeros(size, keys, width)
        narrow[..., : len(used)] = weights[..., used]
        product = flat.new_zeros(size, heads * rows, columns)
        product[..., used] = torch.bmm(flat, narrow)[..., : len(used)]
    product = product.view(size, heads, rows, -1)
    masses, far = product[..., :masks], product[..., masks:]
    near = block.index_select(-1, the_plan.near)  # (batch, heads, rows, M)
    distance = (
        far[..., FAR_DISTANCE]
        + the_plan.offset * (far[..., FAR_LEFT] - far[..., FAR_RIGHT])
        + torch.einsum("bhrm,rm->bhr", near, the_plan.near_distance)
    )
    profile = far[..., PLAN_COLUMNS:].clone()
    index = the_plan.near_bin.expand(size, heads, rows, -1)
    profile.scatter_add_(-1, index, near)
    return masses, distance, profile
