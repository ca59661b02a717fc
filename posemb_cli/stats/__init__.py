"""Per-head attention statistics over a corpus (`posemb stats`): batched, streamed layer by layer.

Each statistic of each head (layer, head) is a mean over all query rows i of all texts pooled together; padding is
never counted. The per-row definitions live in `attention.py` (one function each, with their references):

- cls, sep, punct: attention mass on the [CLS] / [SEP] / punctuation key positions (Clark et al. 2019);
- self a[i,i]; prev a[i,i−1] over rows i ≥ 1; next a[i,i+1] over rows i ≤ n−2;
- entropy of the row in nats (smoothed, see `attention.entropy`) and uniform_entropy, the entropy of a head that
  spreads evenly over the keys each row can see (`attention.uniform_entropy`: ln n, or ln(i + 1) for query i of a
  causal model; a mean over rows too, so longer texts weigh more);
- distance Σ_j a[i,j]·|i−j| (Vig & Belinkov 2019);
- sink: mass on the first k tokens (Xiao et al. 2023), k = `sink_k`;
- with sentence pairs: within / across, the mass on the row's own segment and on the other one.

Special tokens. "cls" is the special token at position 0, if there is one ([CLS], RoBERTa's <s>, LLaMA's BOS);
"sep" is every other special token the tokenizer added ([SEP], </s>, EOS). A model whose tokenizer adds none
(GPT-2) has cls = sep = 0 everywhere. Punctuation: a non-special token whose text (from its character offsets,
whitespace stripped) is non-empty and consists only of Unicode punctuation (categories P*).

Where this differs from the code it cites (Clark et al.'s notebook, clarkkev/attention-analysis General_Analysis):
- averaging: the notebook divides each text's sums by its n and then by the number of texts (a mean of per-text
  means); posemb pools the rows, so a corpus streams and its shards merge exactly: posemb's value is the mean of the
  per-text means weighted by length, the same when all texts have one length;
- prev / next: the notebook divides by all n rows; posemb by the n − 1 rows that have that neighbour (per text,
  posemb's = the notebook's × n/(n − 1));
- punct: the notebook counts the tokens "." and ","; posemb every all-punctuation token (also "!", "?", ";", "。",
  "，"), so that texts in other scripts and styles are measured alike;
- special tokens: the notebook matches token strings ("[CLS]", "[SEP]"); posemb counts what the tokenizer added
  (its special_tokens_mask, the rule of `inspect`'s `special` column), so a special-token string typed in the text
  ("[SEP]", which the tokenizer turns into the special id itself) is an ordinary token here, neither sep nor punct,
  and `corpus_stats` warns with their count. For a real separator, give pairs (`--pairs`).

Segments (pairs): a token belongs to segment B from the first token of the second sentence on, and to segment A
before it. So [CLS] A [SEP] is A and B [SEP] is B, as BERT's token types say; RoBERTa's `</s></s>` between the
sentences is A.

Pattern (after Kovaleva et al. 2019, "Revealing the Dark Secrets of BERT"), from the head's means:
vertical if cls + sep ≥ 0.5 (half the mass on special tokens); diagonal if self + prev + next ≥ 0.5 (the larger of
the two wins if both hold); otherwise, with pairs, block if within ≥ 0.8; otherwise heterogeneous.

How it runs: lines are read lazily, one block of `partials.BLOCK_LINES` lines at a time (fixed by the line numbers:
block b is lines b·BLOCK_LINES .. from 0, blank lines counted); each block is tokenized, sorted by length and cut
into batches, so padding stays small. A
forward hook on each layer's attention module (registry: `Family.attention_module`) reduces that layer's maps to
per-head sums at once, in torch on the model's device, a few heads at a time, into float64 accumulators; the model
is called without `output_attentions`, so no layer's maps outlive their layer. Peak memory grows with one layer's
maps, not with the number of layers.

Pieces. `run_shard` (`--shard I/N`) reads every line but sums only the blocks of its shard (`partials.Shard`:
block b when b mod N = I); `partials.merge` adds the float64 sums and counts of the shards. Since shards never cut
a block, and a block is sorted and batched by itself, every text runs in the same batch, of the same shape, in
every split of the corpus: the forward pass gives the same float32 numbers, and a merge differs from one run only
by the order of the float64 additions of the batch sums (about 1e-16 relative). (Batching across a shard's own
lines, as posemb 0.4 did, let a text's batch depend on the split: the float32 rounding of a batched forward pass
depends on the batch's shape, up to 1e-6 relative.) The same --batch-size must be used for every piece; a
model whose position encoding depends on the padded length runs one text at a time anyway. The running sums change
only after whole batches, as a new `_State`, so that Ctrl-C mid-batch leaves a consistent state to save
(`--checkpoint`); a resumed run re-reads the block it stopped in and skips the batches already summed, so it adds
the same batches in the same order as an uninterrupted run. The partial file format is in `partials.py`.
"""

from .batching import DEFAULT_BATCH_SIZE, read_item
from .reducer import _Reducer
from .result import (
    DEFAULT_BINS,
    DEFAULT_SINK_K,
    DEFAULT_SINK_THRESHOLD,
    PAIR_STATISTICS,
    PATTERNS,
    STATISTICS,
    CorpusStats,
    check_sort_column,
    columns,
    distance_bins,
    pattern,
)
from .run import (
    DEFAULT_CHECKPOINT_SECONDS,
    DEFAULT_CHECKPOINT_TEXTS,
    Partial,
    Shard,
    corpus_stats,
    merge,
    partial_stats,
    read_partial,
    run_shard,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_BINS",
    "DEFAULT_CHECKPOINT_SECONDS",
    "DEFAULT_CHECKPOINT_TEXTS",
    "DEFAULT_SINK_K",
    "DEFAULT_SINK_THRESHOLD",
    "PAIR_STATISTICS",
    "PATTERNS",
    "STATISTICS",
    "CorpusStats",
    "Partial",
    "Shard",
    "_Reducer",
    "check_sort_column",
    "columns",
    "corpus_stats",
    "distance_bins",
    "merge",
    "partial_stats",
    "pattern",
    "read_item",
    "read_partial",
    "run_shard",
]
