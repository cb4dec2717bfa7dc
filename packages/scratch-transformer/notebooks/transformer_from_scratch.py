# %% [markdown]
# # The Transformer from scratch: one attention head to a GPT with a KV cache
#
# This notebook builds a decoder-only Transformer (a GPT) one piece at a time, with
# [`scratch-transformer`](https://github.com/scratch-dl/scratch/tree/main/packages/scratch-transformer): every
# layer's forward **and backward** is written by hand with plain torch tensor operations, and each backward is
# checked here against `torch.autograd` (in float64, where a right formula agrees with it down to rounding).
#
# 1. one attention head: scaled dot-product attention;
# 2. masks: padding and causal;
# 3. multi-head attention: heads split and merged;
# 4. layer normalisation and the feed-forward network;
# 5. an encoder block, pre-norm, as the GPT stacks it;
# 6. the GPT itself;
# 7. the KV cache: the same tokens, faster;
# 8. a small training run on Tiny Shakespeare;
# 9. is my number right? (the run's band over seeds);
# 10. exercises: write three of these backwards yourself.
#
# You need `pip install scratch-transformer jupyter` (until it is on PyPI: from a clone of the repository,
# `pip install ./shared-engine ./packages/scratch-transformer jupyter`), and, for the training run, the Tiny
# Shakespeare text: it is downloaded (and verified) on first use, or read from `$SCRATCH_DATA_DIR`. The whole
# notebook runs in well under a minute on 2 CPU cores.

# %%
import math
import time

import matplotlib.pyplot as plt
import torch

from scratch_engine.tools.testing import check_backward

torch.set_num_threads(2)
torch.manual_seed(0)
f64 = torch.float64  # gradient checks run in float64: a difference then means a wrong formula, not rounding

# %% [markdown]
# ## 1. One attention head
#
# A head has queries $Q \in \mathbb{R}^{T_q \times d_k}$ (one per position that asks), keys
# $K \in \mathbb{R}^{T_k \times d_k}$ and values $V \in \mathbb{R}^{T_k \times d_v}$ (one per position that
# answers). Each query scores every key, a softmax over the keys turns each row of scores into weights that sum to
# 1, and the output is the weighted mean of the values:
#
# $$S = \frac{QK^\top}{\sqrt{d_k}} \in \mathbb{R}^{T_q \times T_k}, \qquad
# P_{ij} = \frac{e^{S_{ij}}}{\sum_{j'} e^{S_{ij'}}}, \qquad O = PV \in \mathbb{R}^{T_q \times d_v}.$$
#
# Why $\sqrt{d_k}$: a dot product of two vectors of $d_k$ independent unit-variance entries has variance $d_k$;
# unscaled, the scores grow with the width and the softmax saturates (one weight near 1, gradients near 0).
#
# The backward, with $G = \partial L/\partial O$, runs the three lines in reverse:
#
# $$\frac{\partial L}{\partial V} = P^\top G, \qquad \frac{\partial L}{\partial P} = G V^\top, \qquad
# \frac{\partial L}{\partial S_{ij}} = P_{ij}\Big(\frac{\partial L}{\partial P_{ij}} -
#   \sum_{j'} \frac{\partial L}{\partial P_{ij'}} P_{ij'}\Big),$$
#
# $$\frac{\partial L}{\partial Q} = \frac{1}{\sqrt{d_k}}\,\frac{\partial L}{\partial S}\,K, \qquad
# \frac{\partial L}{\partial K} = \frac{1}{\sqrt{d_k}}\Big(\frac{\partial L}{\partial S}\Big)^{\!\top} Q.$$
#
# The softmax's Jacobian $\operatorname{diag}(p) - pp^\top$ is never built: the row sum does its work. In the
# package every tensor has leading dimensions (batch, heads) in front: `(..., T, d)`.

# %%
from scratch_transformer import ScaledDotProductAttention

q = torch.randn(2, 4, 8, dtype=f64)  # (batch, T_q, d_k)
k = torch.randn(2, 6, 8, dtype=f64)  # (batch, T_k, d_k)
v = torch.randn(2, 6, 5, dtype=f64)  # (batch, T_k, d_v)
head = ScaledDotProductAttention()
out = head(q, k, v)
weights = head.weights  # P of the last forward
print(f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} -> output {tuple(out.shape)}")
print(f"attention weights P {tuple(weights.shape)} = (batch, T_q, T_k)")
print("row 0 of P:", [round(p, 3) for p in weights[0, 0].tolist()], "sums to", round(weights[0, 0].sum().item(), 12))

wide = torch.randn(10_000, 64, dtype=f64), torch.randn(10_000, 64, dtype=f64)
dots = (wide[0] * wide[1]).sum(dim=-1)
print(f"d_k = 64: std of q·k = {dots.std():.2f} (about √64 = 8), of q·k/√d_k = {dots.std() / 8:.2f}")

# %%
check_backward(head, q, k, v)  # raises, naming the gradient, if the hand-written backward differs from autograd
print("ScaledDotProductAttention: the backward's dL/dq, dL/dk, dL/dv match autograd")

# %% [markdown]
# ## 2. Masks
#
# A mask is boolean, **`True` = may attend**, and broadcasts to the scores `(B, H, T_q, T_k)`. Where it is
# `False` the score becomes $-\infty$ before the softmax, so that key's weight is exactly 0 (and so is its
# gradient: the formulas above need no change).
#
# - `padding_mask(ids, pad)`, `(B, 1, 1, T)`: no query looks at a padded position (sequences of a batch are
#   padded to one length);
# - `causal_mask(T)`, `(T, T)`, lower triangular: position $t$ sees positions $\le t$ only. That is what lets a
#   GPT train on every position of a block at once: position $t$ predicts character $t+1$ without reading it.
#
# Masks combine with `&`.

# %%
from scratch_transformer import causal_mask, padding_mask

PAD = 0
ids = torch.tensor([[5, 3, 8, 2, PAD, PAD], [7, 1, 4, 9, 6, 2]])  # two sequences, the first padded to length 6
padding = padding_mask(ids, PAD)
causal = causal_mask(6)
both = causal & padding
print(f"padding_mask {tuple(padding.shape)}, row of sequence 0: {padding[0, 0, 0].int().tolist()}")
print(f"causal_mask {tuple(causal.shape)}:")
print(causal.int())
print(f"causal & padding {tuple(both.shape)}, sequence 0:")
print(both[0, 0].int())

# %%
x = torch.randn(2, 1, 6, 8, dtype=f64)  # (B, heads, T, d_k); self-attention: q, k, v from the same positions
panels = {"no mask": None, "padding mask": padding, "causal & padding": both}
probs = {}
for name, mask in panels.items():
    head(x, x, x, mask)
    probs[name] = head.weights[0, 0]  # sequence 0, (T_q, T_k)
    on_padding = probs[name][:, 4:].abs().max().item()
    print(
        f"{name:>17}: largest weight on the padded keys 4, 5 = {on_padding:.3f}; rows sum to 1: "
        f"{torch.allclose(probs[name].sum(dim=-1), torch.ones(6, dtype=f64))}"
    )

figure, axes = plt.subplots(1, 3, figsize=(11, 3.9), constrained_layout=True)
for axis, (name, p) in zip(axes, probs.items(), strict=True):
    image = axis.imshow(p, vmin=0.0, vmax=1.0, cmap="viridis")
    axis.set_title(name)
    axis.set_xlabel("key position j (4, 5 are padding)")
    axis.set_ylabel("query position i")
figure.colorbar(image, ax=axes, label="attention weight $P_{ij}$", shrink=0.9)
figure.suptitle("Self-attention weights of one sequence under each mask")
plt.show()

# %%
check_backward(head, x, x, x, forward_kwargs={"mask": both})
print("ScaledDotProductAttention with a causal & padding mask: backward matches autograd")

# %% [markdown]
# ## 3. Multi-head attention
#
# One head averages the values with one set of weights. $H$ heads, each of width $d_k = d/H$, look at the
# sequence in $H$ ways for the same cost. Four `Dense` layers $W_Q, W_K, W_V, W_O \in \mathbb{R}^{d \times d}$
# project, and $\operatorname{split}$: $(B, T, d) \to (B, H, T, d_k)$ (a reshape and a transpose;
# $\operatorname{merge}$ is its inverse) hands each head its slice:
#
# $$\operatorname{MHA}(x_q, x_k, x_v) = \operatorname{merge}\Big(\operatorname{Attention}\big(
#   \operatorname{split}(x_q W_Q^\top + b_Q),\ \operatorname{split}(x_k W_K^\top + b_K),\
#   \operatorname{split}(x_v W_V^\top + b_V)\big)\Big)\, W_O^\top + b_O.$$
#
# The backward runs the chain in reverse: `out_proj`, $\operatorname{split}$ (the adjoint of
# $\operatorname{merge}$), the head's backward above, $\operatorname{merge}$, then each projection, whose
# `Dense` backward gives $\partial W = g^\top x$, $\partial b = \sum g$, $\partial x = g W$. Below, cross-attention
# (5 queries over a memory of 7 positions) so that the two lengths stay apart in the shapes.

# %%
from scratch_transformer import MultiHeadAttention

mha = MultiHeadAttention(d_model=16, num_heads=4).to(f64)
x = torch.randn(2, 5, 16, dtype=f64)  # queries from 5 positions
memory = torch.randn(2, 7, 16, dtype=f64)  # keys and values from 7 others
q = mha.split_heads(mha.q_proj(x))
k = mha.split_heads(mha.k_proj(memory))
v = mha.split_heads(mha.v_proj(memory))
print(f"x {tuple(x.shape)} -> q_proj {tuple(mha.q_proj(x).shape)} -> split_heads {tuple(q.shape)} = (B, H, T_q, d_k)")
print(f"memory {tuple(memory.shape)} -> k, v {tuple(k.shape)} = (B, H, T_k, d_k)")
heads = mha.attention(q, k, v)
print(f"each head attends: {tuple(heads.shape)}, weights {tuple(mha.attention.weights.shape)} = (B, H, T_q, T_k)")
merged = mha.merge_heads(heads)
y = mha.out_proj(merged)
print(f"merge_heads {tuple(merged.shape)} -> out_proj {tuple(y.shape)}")
print("the same as mha(x, memory, memory):", torch.allclose(y, mha(x, memory, memory), rtol=0, atol=1e-14))

# %%
check_backward(mha, x, memory, memory)
print("MultiHeadAttention: dL/dx_q, dL/dx_k, dL/dx_v and the four projections' dW, db match autograd")

# %% [markdown]
# ## 4. Layer normalisation and the feed-forward network
#
# **LayerNorm** normalises each position over its $d$ features, then scales and shifts, with
# $s = (\sigma^2 + \epsilon)^{-1/2}$ and $\epsilon = 10^{-5}$:
#
# $$\mu = \tfrac1d \textstyle\sum_j x_j, \quad \sigma^2 = \tfrac1d \sum_j (x_j - \mu)^2, \quad
# \hat x = (x - \mu)\, s, \quad y = \gamma \odot \hat x + \beta.$$
#
# With $\hat g = g \odot \gamma$: $\partial\gamma = \sum_\text{rows} g \odot \hat x$,
# $\partial\beta = \sum_\text{rows} g$ and
#
# $$\frac{\partial L}{\partial x_j} = s\Big(\hat g_j - \tfrac1d \textstyle\sum_k \hat g_k -
#   \hat x_j\, \tfrac1d \sum_k \hat g_k \hat x_k\Big),$$
#
# the two means because $\mu$ and $\sigma$ depend on every $x_k$.
#
# **The feed-forward network** works on each position alone,
# $\operatorname{FFN}(x) = f(xW_1^\top + b_1)W_2^\top + b_2$ with $W_1 \in \mathbb{R}^{d_\text{ff} \times d}$,
# $d_\text{ff} = 4d$, and $f$ = ReLU (the paper) or GELU (GPT). Attention mixes positions; the feed-forward
# network transforms each one.

# %%
from scratch_transformer import FeedForward, LayerNorm

norm = LayerNorm(16).to(f64)
x = 3.0 + 2.0 * torch.randn(2, 5, 16, dtype=f64)  # off-centre, wide
y = norm(x)
print(f"x {tuple(x.shape)}: row means about {x.mean(dim=-1).mean():.2f}, stds about {x.std(dim=-1).mean():.2f}")
print(
    f"LayerNorm(x): largest |row mean| {y.mean(dim=-1).abs().max():.1e}, "
    f"row stds {y.std(dim=-1, unbiased=False).min():.4f} to {y.std(dim=-1, unbiased=False).max():.4f}"
)
check_backward(norm, x)
print("LayerNorm: dL/dx, dL/dgamma, dL/dbeta match autograd")

feed_forward = FeedForward(16, 64, activation="gelu").to(f64)
print(f"FeedForward: {tuple(x.shape)} -> {tuple(feed_forward(x).shape)} (hidden width 64)")
check_backward(feed_forward, x)
print("FeedForward (GELU): dL/dx and dW_1, db_1, dW_2, db_2 match autograd")

# %% [markdown]
# ## 5. An encoder block, pre-norm
#
# A block is self-attention then the feed-forward network, each inside a residual connection. The GPT uses the
# **pre-norm** arrangement (`norm_first=True`): normalise the sublayer's input, leave the residual path alone,
#
# $$x' = x + \operatorname{MHA}(\operatorname{LN}_1(x)), \qquad y = x' + \operatorname{FFN}(\operatorname{LN}_2(x')).$$
#
# Backward: $\partial x' = g + \operatorname{LN}_2'\big(\operatorname{FFN}'(g)\big)$ and
# $\partial x = \partial x' + \operatorname{LN}_1'\big(\operatorname{MHA}'(\partial x')\big)$, where the
# self-attention's three input gradients (query, key, value all read $\operatorname{LN}_1(x)$) add up. The residual
# path carries $g$ through every block untouched, which is why pre-norm stacks train without a careful warm-up.
# Given a causal mask, this block is a GPT block.

# %%
from scratch_transformer import EncoderLayer

block = EncoderLayer(d_model=16, num_heads=4, d_ff=64, activation="gelu", norm_first=True).to(f64)
x = torch.randn(2, 5, 16, dtype=f64)
mask = causal_mask(5)
y = block(x, mask)
print(f"EncoderLayer (pre-norm, causal): {tuple(x.shape)} -> {tuple(y.shape)}")
changed = x.clone()
changed[:, 4] += 1.0  # change the last position only
y_changed = block(changed, mask)
print("positions 0-3 unchanged when position 4 changes:", torch.equal(y[:, :4], y_changed[:, :4]))
check_backward(block, x, forward_kwargs={"mask": mask})
print("EncoderLayer: dL/dx and every parameter's gradient match autograd")

# %% [markdown]
# ## 6. The GPT
#
# A decoder-only Transformer reads character ids $c_1, \dots, c_T$ ($T \le$ `block_size`), adds a learned position
# vector to each character's embedding, runs $L$ causal blocks, normalises, and scores every character of the
# vocabulary with the **same** embedding matrix $E \in \mathbb{R}^{V \times d}$ (tied weights):
#
# $$x^{(0)}_t = E_{c_t} + P_t, \qquad x^{(\ell)} = \operatorname{Block}_\ell\big(x^{(\ell-1)}\big), \qquad
# z_t = \operatorname{LN}\big(x^{(L)}_t\big)\, E^\top \in \mathbb{R}^{V}.$$
#
# $z_t$ is trained to predict $c_{t+1}$: one forward trains all $T$ predictions of a block. $E$'s gradient is the
# sum of its two uses (the output head, and the rows the lookup read).
#
# The characters are those of Tiny Shakespeare (65 of them). `GPTConfig`'s defaults are nanoGPT's small CPU
# model: 4 blocks, 4 heads, width 128; here with a context of 512 characters, for the KV cache's long samples.

# %%
from scratch_engine.tools.text import Vocabulary, read_text
from scratch_transformer.gpt import GPT, GPTConfig

text, source = read_text()  # Tiny Shakespeare: $SCRATCH_DATA_DIR, else the cache (downloaded once, verified)
vocabulary = Vocabulary.from_text(text)
print(f"{len(text):,} characters, {len(vocabulary)} distinct: {''.join(vocabulary.chars)!r}")

torch.manual_seed(0)
gpt = GPT(GPTConfig(len(vocabulary), block_size=512))
print(gpt.config)
print(f"{gpt.num_parameters():,} parameters")
ids = vocabulary.encode("ROMEO:\nWhat light").unsqueeze(0)
logits = gpt(ids)
print(f"ids {tuple(ids.shape)} -> logits {tuple(logits.shape)} = (B, T, V)")
target = vocabulary.encode("OMEO:\nWhat light ")
loss = -logits[0].log_softmax(dim=-1)[torch.arange(len(target)), target].mean()
print(
    f"untrained: loss {loss:.3f} nats/char; a uniform guess over {len(vocabulary)} gives ln {len(vocabulary)} = "
    f"{math.log(len(vocabulary)):.3f}"
)

# %%
torch.manual_seed(0)
tiny_gpt = GPT(GPTConfig(len(vocabulary), block_size=8, layers=2, heads=2, d_model=16)).to(f64)
check_backward(tiny_gpt, torch.randint(0, len(vocabulary), (3, 8)))
print("GPT (2 blocks, tied embedding): every parameter's gradient matches autograd")

# %% [markdown]
# ## 7. The KV cache: the same tokens, faster
#
# **What attention costs.** Per layer, a sequence of $T$ positions costs $O(T d^2)$ in the projections and the
# feed-forward network, and $O(T^2 d)$ in attention: $QK^\top$ and $PV$ are $T \times T$ products of width $d$.
# The $T^2$ term is the price of every position reading every earlier one directly (an RNN instead carries one
# state through $T$ sequential steps), and it is why the context ends at `block_size`.
#
# **Generating** appends one character at a time. Without a cache, character $t$ re-runs the model over the whole
# prefix: $O(t d^2 + t^2 d)$ per layer, $O(T^2 d^2 + T^3 d)$ for $T$ characters. But the keys and values of the
# earlier positions do not change when a character is appended (the causal mask: no position reads a later one).
# The **KV cache** keeps every block's keys and values `(B, H, t, d_k)`; each new character runs the blocks on one
# position, appends its key and value, and its query attends over the cache: $O(d^2 + t d)$ per layer, and the
# same logits (to rounding). `generate(..., use_cache=False)` recomputes the prefix. Below, both draw 100, 200
# and 400 characters from the same seed: the same tokens, and the cache's lead grows with the length, as the costs
# say. (The model is untrained: the cache is arithmetic, it does not care what the weights are.)

# %% tags=["timing"]
from scratch_transformer.gpt import generate

prompt = vocabulary.encode("ROMEO:").unsqueeze(0)


def draw(use_cache: bool, count: int) -> tuple[torch.Tensor, float]:
    generator = torch.Generator().manual_seed(0)  # the same seed for both
    start = time.perf_counter()
    tokens = generate(gpt, prompt, count, temperature=1.0, generator=generator, use_cache=use_cache)
    return tokens, time.perf_counter() - start


draw(True, 10), draw(False, 10)  # warm-up
same = {}
print("characters   with the KV cache   recomputing the prefix   speed-up")
for count in (100, 200, 400):
    cached, cached_seconds = draw(use_cache=True, count=count)
    recomputed, recomputed_seconds = draw(use_cache=False, count=count)
    same[count] = torch.equal(cached, recomputed)
    speed_up = recomputed_seconds / cached_seconds
    print(f"{count:10}   {1000 * cached_seconds:12.0f} ms   {1000 * recomputed_seconds:19.0f} ms   {speed_up:7.1f}x")

# %%
assert all(same.values())
for count, equal in same.items():
    print(f"{count} characters: the same tokens with and without the cache: {equal}")
print(repr(vocabulary.decode(cached[0])[:70]), "...  (random weights: random characters)")

# %% [markdown]
# ## 8. Training a tiny GPT on Tiny Shakespeare
#
# The recipe of `scratch-transformer train shakespeare`, at a small budget: a 2-block GPT of width 64 with a
# context of 32 characters; batches of 16 blocks read at random places in the first 90% of the text (`RandomBlocks`;
# the targets are the blocks shifted by one character); AdamW (weight decay on the matrices only) warming up over
# 20 steps to 3e-3, then a cosine down to 1e-4 at step 200; gradients clipped to norm 1. The loss is the mean
# cross-entropy in **nats per character** over every position. Validation reads the whole last 10% (111,540
# characters) in consecutive blocks of 32, each character predicted from the start of its block (nanoGPT's
# estimate; the command line's default, windows advancing by half a block, costs twice as much).

# %%
from scratch_engine import AdamW, CrossEntropyLoss, Engine, WarmupCosine
from scratch_engine.tools.text import split_text
from scratch_transformer.gpt import sample
from scratch_transformer.shakespeare import IGNORE, RandomBlocks, validation_blocks

SEED, STEPS, BLOCK = 0, 200, 32
train_text, val_text = split_text(text)  # the first 90% trains, the last 10% validates
train_ids, val_ids = vocabulary.encode(train_text), vocabulary.encode(val_text)

torch.manual_seed(SEED)
model = GPT(GPTConfig(len(vocabulary), block_size=BLOCK, layers=2, heads=4, d_model=64))
batches = RandomBlocks(train_ids, batch_size=16, block_size=BLOCK, seed=SEED)  # (x, y): y is x shifted by one
optimizer = AdamW(model, learning_rate=3e-3, betas=(0.9, 0.99), weight_decay=0.1, decay_vectors=False)
schedule = WarmupCosine(optimizer, 20, STEPS, 1e-4)  # warm-up steps, total steps, the floor
loss_fn = CrossEntropyLoss(ignore_index=IGNORE)  # IGNORE: validation targets scored by the window before
engine = Engine(model, loss_fn, optimizer, scheduler=schedule, clip_grad_norm=1.0, progress=False)
start = time.perf_counter()
history = engine.fit(batches, max_steps=STEPS, eval_every=10)  # a history row (mean training loss) every 10 steps
print(f"{model.num_parameters():,} parameters, {STEPS} steps in {time.perf_counter() - start:.1f} s")
validation = engine.evaluate(validation_blocks(val_ids, BLOCK))  # consecutive blocks of BLOCK characters
print(f"validation loss: {validation['loss']:.3f} nats/char ({validation['loss'] / math.log(2):.3f} bits/char)")

# %%
figure, axis = plt.subplots(figsize=(7, 4))
axis.plot(history["step"], history["loss"], marker=".", label="training loss (mean of each 10 steps)")
axis.axhline(math.log(len(vocabulary)), color="grey", linestyle=":", label=f"uniform guess, ln {len(vocabulary)}")
axis.scatter([STEPS], [validation["loss"]], color="C3", zorder=3, label="validation loss, at the end")
axis.set_xlabel("step")
axis.set_ylabel("cross-entropy (nats per character)")
axis.set_title("A 2-block GPT of width 64 on Tiny Shakespeare")
axis.legend()
plt.show()

# %%
print(sample(model, vocabulary, "ROMEO:", 200, temperature=0.8, generator=torch.Generator().manual_seed(SEED)))

# %% [markdown]
# After 200 steps (102,400 characters seen, a tenth of the training text) it writes words of about the right
# lengths between spaces, a few real short ones (*I*, *hath*, *be*, *we*) and line breaks; not yet spelling, nor
# the speaker's name and colon that open each speech. Longer runs get there.
#
# ## 9. Is my number right?
#
# The run above reaches a validation loss of **2.489 nats/char** at seed 0 (CPU, float32, 2 threads). Its cell run
# with seeds 0, 1 and 2 gave **2.489, 2.486 and 2.488**: a band of 2.486-2.489. A number well outside it means the
# recipe changed (or the data: the split must be 1,003,854 training and 111,540 validation characters); for
# comparison, guessing uniformly gives ln 65 = 4.17.
#
# The same small run on the command line (`--val-stride 32`: consecutive blocks, as above):
#
# ```bash
# scratch-transformer train shakespeare --layers 2 --heads 4 --d-model 64 --block-size 32 --batch-size 16 \
#     --lr 3e-3 --warmup-steps 20 --max-steps 200 --eval-every 200 --val-stride 32 --threads 2
# ```
#
# The full run, `scratch-transformer train shakespeare --max-minutes 10 --threads 2` (4 blocks of width 128, a
# context of 128 characters, 4,139 of its 4,200 steps in the 10 minutes on 2 CPU cores), reaches a validation loss
# of **1.529 nats/char** in the package README, where the RNN package's LSTM reaches 1.531 in the same 10 minutes.

# %% [markdown]
# ## 10. Exercises: write the backward yourself
#
# Each exercise gives a layer's forward (the package's own math, on small float64 inputs) and checks your
# `backward(grad_output, ...)` against autograd in one line: ✓, or ✗ naming the wrong gradient, how far off and
# where, with a hint. Replace the `None`s, run the cell again. `exercise.inputs()` shows the inputs it draws;
# `exercise.show_solution()` prints a solution once you are done (or stuck).
#
# ### The softmax
#
# $P = \operatorname{softmax}(S)$ over the last dimension: `scores` `(2, 3, 5)`, $P_{ij} = e^{S_{ij}} / \sum_{j'}
# e^{S_{ij'}}$. Given $\partial L/\partial P$ (`grad_output`, shaped like $P$), return $\partial L/\partial S$.
# Every $P_{ij}$ depends on every $S_{ij'}$ of its row.

# %%
from scratch_transformer.exercises import attention, layer_norm, softmax


def softmax_backward(grad_output, scores):
    grad_scores = None  # your code here
    return grad_scores


softmax.check(softmax_backward)

# %% [markdown]
# ### Scaled dot-product attention
#
# `q` `(2, 3, 4)`, `k` `(2, 5, 4)`, `v` `(2, 5, 6)`: 3 queries over 5 keys, width $d = 4$, values of width 6.
#
# $$O = \operatorname{softmax}\Big(\frac{q k^\top}{\sqrt d}\Big)\, v.$$
#
# Return $\partial L/\partial q$, $\partial L/\partial k$, $\partial L/\partial v$ given $\partial L/\partial O$.
# The softmax's backward is the one you just wrote; keep track of the $1/\sqrt d$ on the way back.


# %%
def attention_backward(grad_output, q, k, v):
    grad_q = None  # your code here
    grad_k = None  # your code here
    grad_v = None  # your code here
    return grad_q, grad_k, grad_v


attention.check(attention_backward)

# %% [markdown]
# ### Layer normalisation
#
# `x` `(2, 3, 5)`, `gamma` and `beta` `(5,)`, $\epsilon = 10^{-5}$ (the package's `LayerNorm` default), each of
# the 6 positions normalised over its 5 features with the biased variance:
#
# $$\mu = \tfrac1D \textstyle\sum_j x_j, \quad \sigma^2 = \tfrac1D \sum_j (x_j - \mu)^2, \quad
# y = \gamma \odot \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta.$$
#
# Return $\partial L/\partial x$, $\partial L/\partial \gamma$, $\partial L/\partial \beta$. $\gamma$ and $\beta$
# are shared by every position: their gradients sum over all of them.


# %%
def layer_norm_backward(grad_output, x, gamma, beta):
    grad_x = None  # your code here
    grad_gamma = None  # your code here
    grad_beta = None  # your code here
    return grad_x, grad_gamma, grad_beta


layer_norm.check(layer_norm_backward)
