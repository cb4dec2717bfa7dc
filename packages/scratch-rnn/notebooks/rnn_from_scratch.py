# %% [markdown]
# # Recurrent networks from scratch: RNN, LSTM and GRU
#
# This notebook walks through [`scratch-rnn`](../README.md): three recurrent cells whose forward **and**
# backward are written by hand on plain torch tensor ops, the sequence layers that run them over time with
# backpropagation through time (BPTT), and a character-level language model on Tiny Shakespeare. You will
#
# - see each cell's math, run it on a tiny input and check its hand-written backward against autograd;
# - measure the vanishing gradient of a vanilla RNN, an LSTM and a GRU, and see why the LSTM's cell state
#   keeps gradients alive;
# - train a small LSTM on Shakespeare for 150 steps and sample from it;
# - write the backward of the RNN, LSTM and GRU cells yourself, checked in one call.
#
# You need `pip install scratch-rnn jupyter` (or, from a clone of the repository,
# `pip install ./shared-engine ./packages/scratch-rnn jupyter`). The training run reads Tiny Shakespeare from
# `$SCRATCH_DATA_DIR` or the cache, and downloads it (verified) when it is in neither.
#
# Notation: a batch of $N$ sequences, $x_t \in \mathbb{R}^{N\times d}$, $h_t \in \mathbb{R}^{N\times H}$;
# $\delta v$ is $\partial L/\partial v$, $\sigma$ the logistic function, $\odot$ elementwise. Every layer
# has torch's parameter layout: $W_{ih} \in \mathbb{R}^{GH\times d}$, $W_{hh} \in \mathbb{R}^{GH\times H}$,
# $b_{ih}, b_{hh} \in \mathbb{R}^{GH}$ with $G = 1, 4, 3$ gate blocks for the RNN, the LSTM and the GRU.

# %%
import math

import matplotlib.pyplot as plt
import torch

from scratch_engine.tools.testing import check_backward

torch.set_num_threads(1)  # tiny tensors: on a busy 2-core machine a second thread mostly waits (10-30x slower)
torch.manual_seed(0)
f64 = torch.float64  # gradient checks run in float64: a difference is then a wrong formula, not rounding


def shapes(**tensors: torch.Tensor) -> str:
    return ", ".join(f"{name} {tuple(t.shape)}" for name, t in tensors.items())


def check(name: str, layer, *inputs) -> None:
    """The layer's hand-written backward against autograd (check_backward raises if any gradient differs)."""
    check_backward(layer, *inputs)
    print(f"✓ {name}: backward matches autograd for every input and parameter (float64)")


# %% [markdown]
# ## 1. The vanilla RNN cell
#
# One step reads the input and the previous state through two matrices and squashes the sum:
#
# $$a = x W_{ih}^\top + b_{ih} + h W_{hh}^\top + b_{hh}, \qquad h' = \tanh a$$
#
# Shapes: $x$ $(N, d)$, $h, h'$ $(N, H)$, $W_{ih}$ $(H, d)$, $W_{hh}$ $(H, H)$. Backward, given
# $\delta h'$: since $\tanh'(a) = 1 - \tanh^2 a$, the derivative is written with the *output* $h'$,
#
# $$\delta a = \delta h' \odot (1 - h'^2), \quad \delta x = \delta a\, W_{ih}, \quad \delta h = \delta a\, W_{hh},
# \quad \delta W_{ih} = \delta a^\top x, \quad \delta W_{hh} = \delta a^\top h, \quad
# \delta b_{ih} = \delta b_{hh} = \textstyle\sum_n \delta a_n$$
#
# and the weight gradients with the *inputs* $x$ and $h$. $\delta h$ is what the previous time step receives.

# %%
from scratch_rnn import ReLURNNCell, RNNCell

cell = RNNCell(input_size=3, hidden_size=4).to(dtype=f64)
x = torch.randn(2, 3, dtype=f64)  # N = 2 sequences, d = 3 features
h = torch.randn(2, 4, dtype=f64)  # H = 4
h_new = cell(x, h)
print(shapes(x=x, h=h), "->", shapes(h_new=h_new))
print(shapes(**{name: p.data for name, p in cell.named_parameters()}))
check("RNNCell (tanh)", cell, x, h)

# %% [markdown]
# The package also has the ReLU variant, torch's `nonlinearity="relu"`: $h' = \max(0, a)$ and
# $\delta a = \delta h' \odot [h' > 0]$, the rest unchanged. Unlike $\tanh$ it does not saturate, so its
# gradients through time are not squashed, but nothing bounds them either (training it needs clipping).

# %%
relu_cell = ReLURNNCell(3, 4).to(dtype=f64)
print(shapes(h_new=relu_cell(x, h)), f"of which {int((relu_cell(x, h) == 0).sum())} entries are clipped at 0")
check("ReLURNNCell", relu_cell, x, h)

# %% [markdown]
# ## 2. The LSTM cell
#
# The LSTM keeps two states, $h$ and a *cell state* $c$. Four gates are computed in one matrix product,
# stacked $i, f, g, o$ (input, forget, candidate, output) in $W_{ih}$ $(4H, d)$ and $W_{hh}$ $(4H, H)$:
#
# $$[a_i, a_f, a_g, a_o] = x W_{ih}^\top + b_{ih} + h W_{hh}^\top + b_{hh}, \qquad
# i, f, o = \sigma(a_i), \sigma(a_f), \sigma(a_o), \quad g = \tanh a_g$$
#
# $$c' = f \odot c + i \odot g, \qquad h' = o \odot \tanh c'$$
#
# Backward, given $\delta h'$ and $\delta c'$: $c'$ reaches the loss directly *and* through $h'$, so first
#
# $$\tilde\delta c' = \delta c' + \delta h' \odot o \odot (1 - \tanh^2 c'), \qquad \delta c = \tilde\delta c' \odot f$$
#
# $$\delta a_i = \tilde\delta c'\, g\, i(1-i), \quad \delta a_f = \tilde\delta c'\, c\, f(1-f), \quad
# \delta a_g = \tilde\delta c'\, i\,(1-g^2), \quad \delta a_o = \delta h' \tanh c'\; o(1-o)$$
#
# and with $\delta a = [\delta a_i, \delta a_f, \delta a_g, \delta a_o]$ $(N, 4H)$ the rest is the RNN's:
# $\delta h = \delta a\, W_{hh}$, $\delta x = \delta a\, W_{ih}$, $\delta W_{ih} = \delta a^\top x$,
# $\delta W_{hh} = \delta a^\top h$, $\delta b = \sum_n \delta a_n$.

# %%
from scratch_rnn import LSTMCell

lstm_cell = LSTMCell(3, 4).to(dtype=f64)
c = torch.randn(2, 4, dtype=f64)
h_new, c_new = lstm_cell(x, (h, c))  # the state is the pair (h, c), as in torch
print(shapes(x=x, h=h, c=c), "->", shapes(h_new=h_new, c_new=c_new))
print(shapes(weight_ih=lstm_cell.weight_ih.data, weight_hh=lstm_cell.weight_hh.data), "(4 gates x H = 16 rows)")
check("LSTMCell", lstm_cell, x, (h, c))  # the gradient of the output is a pair too: (dL/dh', dL/dc')

# %% [markdown]
# ## 3. The GRU cell
#
# The GRU has one state and three gates, stacked $r, z, n$ (reset, update, candidate). With the input's
# share $g^x = x W_{ih}^\top + b_{ih}$ and the state's $g^h = h W_{hh}^\top + b_{hh}$, each split in three
# blocks, and the reset gate applied to the *projected* state (as in torch and cuDNN):
#
# $$r = \sigma(g^x_r + g^h_r), \quad z = \sigma(g^x_z + g^h_z), \quad n = \tanh(g^x_n + r \odot g^h_n), \quad
# h' = (1 - z) \odot n + z \odot h$$
#
# Backward, given $\delta h'$:
#
# $$\delta a_n = \delta h' (1 - z)(1 - n^2), \quad \delta a_z = \delta h' (h - n)\, z(1 - z), \quad
# \delta a_r = \delta a_n\, g^h_n\, r(1 - r)$$
#
# $$\delta g^x = [\delta a_r, \delta a_z, \delta a_n], \quad \delta g^h = [\delta a_r, \delta a_z,
# \delta a_n \odot r], \quad \delta h = \delta h' \odot z + \delta g^h W_{hh}, \quad \delta x = \delta g^x W_{ih}$$
#
# with $\delta W_{ih} = {\delta g^x}^\top x$, $\delta W_{hh} = {\delta g^h}^\top h$ and the biases summed
# over the batch. $\delta h' \odot z$ is the update gate's direct path from $h'$ back to $h$.

# %%
from scratch_rnn import GRUCell

gru_cell = GRUCell(3, 4).to(dtype=f64)
h_new = gru_cell(x, h)
print(shapes(x=x, h=h), "->", shapes(h_new=h_new))
print(shapes(weight_ih=gru_cell.weight_ih.data, weight_hh=gru_cell.weight_hh.data), "(3 gates x H = 12 rows)")
check("GRUCell", gru_cell, x, h)

# %% [markdown]
# ## 4. Sequence layers and backpropagation through time
#
# `RNN`, `LSTM` and `GRU` run their cell over $t = 0, \dots, T-1$ (input $(T, N, d)$, or $(N, T, d)$ with
# `batch_first=True`), stacked in `num_layers` layers: layer $k$'s outputs are layer $k+1$'s inputs. They
# return the last layer's $h_t$ for every $t$ and the final state of every layer, as `torch.nn` does.
#
# The backward runs the cells' backward from $t = T-1$ down to $0$. $h_t$ feeds both the output $y_t$ and
# step $t+1$, so its gradient is the sum of the two:
#
# $$\delta h_t = \frac{\partial L}{\partial y_t} + \big(\text{what step } t+1 \text{ sent back}\big), \qquad
# (\delta a_t,\ \delta h_{t-1}) = \text{cell backward}(\delta h_t)$$
#
# (the LSTM carries $\delta c_t$ back beside $\delta h_t$, and its cell backward returns $\delta c_{t-1}$ too).
#
# The weights are shared by all steps, so their gradients are sums over time:
# $\delta W_{hh} = \sum_t \delta a_t^\top h_{t-1}$ and $\delta W_{ih} = \sum_t \delta a_t^\top x_t$. Only the
# recurrence is a loop: $x_t W_{ih}^\top$ for every $t$ is one matrix product before it, and those sums are one
# each after it, over the $T \cdot N$ rows. The gradient of the initial state comes out at the end; a language
# model drops it to *truncate* BPTT at the start of each chunk.

# %%
from scratch_rnn import GRU, LSTM, RNN

T, N, d, H, layers = 5, 2, 3, 4, 2
xs = torch.randn(T, N, d, dtype=f64)
h0 = torch.randn(layers, N, H, dtype=f64)
c0 = torch.randn(layers, N, H, dtype=f64)
for layer_class, state in [(RNN, h0), (LSTM, (h0, c0)), (GRU, h0)]:
    layer = layer_class(d, H, num_layers=layers).to(dtype=f64)
    output, final = layer(xs, state)
    finals = final if isinstance(final, tuple) else (final,)
    print(
        f"{layer_class.__name__}: x {tuple(xs.shape)} -> output {tuple(output.shape)},",
        "final state",
        " and ".join(str(tuple(s.shape)) for s in finals),
    )
    check(f"{layer_class.__name__} ({layers} layers, {T} steps, BPTT)", layer, xs, state)

# %% [markdown]
# ## 5. Vanishing gradients: vanilla RNN against LSTM and GRU
#
# How much of the loss's gradient reaches a hidden state $k$ steps earlier? Through the vanilla RNN each step
# multiplies it by the Jacobian
#
# $$\frac{\partial h_t}{\partial h_{t-1}} = \operatorname{diag}(1 - h_t^2)\, W_{hh},$$
#
# so after $k$ steps it is a product of $k$ such matrices, and it shrinks (or explodes) geometrically: with
# $\|W_{hh}\|$ and $1 - h^2$ below 1 it is gone after a few dozen steps.
#
# The LSTM's cell state has another path. From $c_t = f_t \odot c_{t-1} + i_t \odot g_t$, where the gates
# depend on $x_t$ and $h_{t-1}$ but not on $c_{t-1}$,
#
# $$\frac{\partial c_t}{\partial c_{t-1}} = \operatorname{diag}(f_t), \qquad
# \delta c_{t-k} \ \text{(along the cell path)} = \delta c_t \odot f_t \odot f_{t-1} \odot \cdots \odot f_{t-k+1}.$$
#
# The path is *additive*: no $W_{hh}$ and no squashing derivative multiply the gradient on it, only the
# forget gates. When they sit near 1 the gradient flows back almost unchanged, and the network learns when to
# open or close them. The GRU's direct path $h' = \dots + z \odot h$ plays the same role with the update gate:
# $\partial h_t / \partial h_{t-1} = \operatorname{diag}(z_t) + \dots$
#
# The package measures it (`scratch_rnn.gradients`, also `scratch-rnn gradients`): a 1-layer network of 128
# units at initialisation over 200 random one-hot characters, the loss a random direction of the last hidden
# state, and $\|\partial L/\partial h_t\|$ from the hand-written BPTT, relative to the last step, in float64 so
# that nothing underflows. Then again with the forget gate's (LSTM) or update gate's (GRU) bias raised by 3:
# $\sigma(3) \approx 0.95$, "remember".

# %%
from IPython.display import Image

from scratch_rnn.gradients import gradient_curves, plot_gradient_norms

norms = gradient_curves(steps=200, hidden=128)  # {label: ||dL/dh_t|| for t = 0..199, relative to the last}
distances = [10, 20, 50, 100, 199]
print(f"{'steps back':>22}" + "".join(f"{k:>10}" for k in distances))
for label, values in norms.items():
    print(f"{label:>22}" + "".join(f"{values[len(values) - 1 - k]:>10.1e}" for k in distances))
Image(filename=str(plot_gradient_norms(norms, "gradient_norms.png")))

# %% [markdown]
# What the curves say:
#
# - At torch's default initialisation all three lose the gradient geometrically: the RNN, and also the LSTM
#   and the GRU, whose gates start near $\sigma(0) = 1/2$. Ten steps of $\partial c_t/\partial c_{t-1} =
#   \operatorname{diag}(f_t)$ with $f \approx 1/2$ scale the cell path's gradient by about
#   $2^{-10} \approx 10^{-3}$, the order of the LSTM's measured $1.2 \times 10^{-3}$. Gating is no magic at step 0.
# - What gating gives is a path whose decay the network controls through a bias. With the forget gate open
#   ($f \approx \sigma(3) \approx 0.95$ at every step) the LSTM's gradient stops decaying: it stays near
#   $4 \times 10^{-2}$ from 10 to 100 steps back, and grows again near the start of the sequence, where the cell
#   state is still small and $\tanh c$ far from saturation (the cell path alone would lose $0.95^k$; the path
#   through $h$ and the gates feeds gradient back into $c$). With the update gate open the GRU's decays roughly as
#   $0.95^k$ over the first 50 steps, and more slowly after. No setting of a tanh RNN's $W_{hh}$ keeps a gradient
#   alive over 200 steps without risking explosion.
# - Raising the forget bias at initialisation is a common trick for that reason (`CharLM` keeps torch's
#   initialisation, so that it matches `torch.nn` exactly).

# %% [markdown]
# ## 6. A small training run: a character-level LSTM on Tiny Shakespeare
#
# `CharLM` reads characters as one-hot vectors, runs a recurrent stack and a dense head to next-character
# logits, trained with the cross-entropy in nats per character. `CharStreams` cuts the text into 16 contiguous
# streams read 50 characters at a time; the model carries its state from one chunk to the next (truncated
# BPTT: the forward keeps the context, the gradient stops at the chunk boundary). The split is fixed: the
# first 90% of the text trains, the last 10% validates. This is the package's own run at a small budget, the
# same as `scratch-rnn train shakespeare --hidden 64 --layers 1 --batch-size 16 --seq-len 50 --lr 1e-2
# --max-steps 150` (1 × 64 LSTM, Adam, gradient norm clipped to 5).

# %%
import time

from scratch_engine import Adam, CrossEntropyLoss, Engine
from scratch_engine.tools.progress import LossTrace
from scratch_engine.tools.text import read_text, split_text
from scratch_rnn import CharLM, CharStreams, Vocabulary, sample

text, _ = read_text()  # Tiny Shakespeare from $SCRATCH_DATA_DIR or the cache, checked by SHA-256
vocab = Vocabulary.from_text(text)
train_text, val_text = split_text(text)  # the first 90% trains, the last 10% validates
print(f"{len(text):,} characters, {len(vocab)} distinct: {len(train_text):,} to train, {len(val_text):,} to validate")
print(f"a uniform guess costs ln {len(vocab)} = {math.log(len(vocab)):.3f} nats/char")


def train_small_lstm(seed: int, steps: int = 150):
    """A 1 x 64 LSTM trained for ``steps`` steps from ``seed``; returns it, its training curve and its val loss."""
    train = CharStreams(vocab.encode(train_text), batch_size=16, seq_len=50, random_offset=True, seed=seed)
    val = CharStreams(vocab.encode(val_text), batch_size=16, seq_len=50)  # from offset 0 and the zero state
    torch.manual_seed(seed)  # the initial weights
    model = CharLM(len(vocab), arch="lstm", hidden=64, layers=1)
    engine = Engine(model, CrossEntropyLoss(), Adam(model, 1e-2), clip_grad_norm=5.0, progress=False)
    trace = LossTrace(every=5)  # the mean training loss of every 5 steps
    engine.fit(train, max_steps=steps, callbacks=[trace])
    return model, trace.points, engine.evaluate(val)["loss"]


start = time.perf_counter()
model, curve, val_loss = train_small_lstm(seed=0)
print(f"trained and validated in {time.perf_counter() - start:.0f} s")
print(f"validation loss after 150 steps: {val_loss:.3f} nats/char ({val_loss / math.log(2):.2f} bits/char)")

# %%
steps, losses = zip(*curve, strict=True)
plt.figure(figsize=(7, 3.5))
plt.plot(steps, losses, label="training loss (mean of 5 steps)")
plt.axhline(val_loss, color="C1", linestyle="--", label=f"validation loss at step 150: {val_loss:.3f}")
plt.axhline(math.log(len(vocab)), color="grey", linestyle=":", label=f"uniform guess: ln {len(vocab)}")
plt.xlabel("step")
plt.ylabel("cross-entropy (nats/char)")
plt.title("1 x 64 LSTM on Tiny Shakespeare, batch 16 x 50 characters")
plt.legend()
plt.grid(alpha=0.3)
plt.show()

# %% [markdown]
# After 150 steps (120,000 characters, an eighth of one pass over the text) it has learnt the shape of a play
# (a name in capitals and a colon, short lines, blank lines between speeches) and a few short words; the rest is
# English-looking gibberish. `sample` continues a prompt one character at a time (temperature 0.8 sharpens
# the distribution a little; the generator makes the draw repeatable):

# %%
print(sample(model, vocab, "ROMEO:", 200, temperature=0.8, generator=torch.Generator().manual_seed(0)))

# %% [markdown]
# ### Is my number right?
#
# The run above ends at **2.257 nats/char** (seed 0). Measured on CPU in float32 (torch 2.13) with seeds 0, 1
# and 2, `train_small_lstm(seed)` gives 2.257, 2.273 and 2.238: a band of **2.24 to 2.27 nats/char**
# (3.23 to 3.28 bits/char; a uniform guess costs 4.17 nats). Run `train_small_lstm(1)` to check another
# seed. Far outside that band with these settings, something differs: the data (65 distinct characters,
# 1,115,394 in all), the split or the backward.
#
# The full run, a 2 × 256 LSTM with batch 32 × 100 for 2,000 steps (about 11 minutes on one CPU core),
# reaches **1.540 nats/char** (2.22 bits/char) in the package README:
#
# ```bash
# scratch-rnn train shakespeare --arch lstm --threads 1 --max-minutes none --max-steps 2000 --out runs/scratch-rnn/lstm
# ```

# %% [markdown]
# ## 7. Exercises: write the backward yourself
#
# Each exercise poses one cell's forward as plain tensor code, in the package's layout (the tests check that
# it equals the package's cell). Your `backward(grad_output, **inputs)` gets the gradient of the output and
# the forward's inputs, and returns one gradient per input, in the order of `exercise.wrt`. The forward's
# intermediate values are not given: recompute them first. `exercise.check(your_backward)` prints one line:
# ✓, or ✗ naming the gradient that is wrong, by how much and where. `exercise.show_solution()` prints the
# package's solution when you want to compare; `exercise.inputs()` returns the inputs it checks with.
#
# ### Exercise 1: the RNN cell
#
# $$h' = \tanh(x W_{ih}^\top + b_{ih} + h W_{hh}^\top + b_{hh})$$
#
# Given $\delta h'$ $(N, H)$, return $\delta x, \delta h, \delta W_{ih}, \delta W_{hh}, \delta b_{ih},
# \delta b_{hh}$. Shapes: $x$ $(4, 3)$, $h$ $(4, 5)$, $W_{ih}$ $(5, 3)$, $W_{hh}$ $(5, 5)$, biases $(5,)$.

# %%
from scratch_rnn.exercises import gru_cell, lstm_cell, rnn_cell


def rnn_cell_backward(grad_output, x, h, W_ih, W_hh, b_ih, b_hh):
    # recompute h' first, then invert the forward line by line
    dx = None  # your code here
    dh = None  # your code here
    dW_ih = None  # your code here
    dW_hh = None  # your code here
    db_ih = None  # your code here
    db_hh = None  # your code here
    return dx, dh, dW_ih, dW_hh, db_ih, db_hh


rnn_cell.check(rnn_cell_backward)  # prints one line; rnn_cell.verdict(...) returns it (passed, wrong) for code

# %% [markdown]
# ### Exercise 2: the LSTM cell
#
# $$[a_i, a_f, a_g, a_o] = x W_{ih}^\top + b_{ih} + h W_{hh}^\top + b_{hh}, \quad
# i, f, o = \sigma(a_{i,f,o}), \ g = \tanh a_g, \quad c' = f \odot c + i \odot g, \quad h' = o \odot \tanh c'$$
#
# The forward returns the pair $(h', c')$, so `grad_output` is the pair $(\delta h', \delta c')$. Return
# $\delta x, \delta h, \delta c, \delta W_{ih}, \delta W_{hh}, \delta b_{ih}, \delta b_{hh}$. The gates are
# stacked $i, f, g, o$ in the $4H = 20$ rows of $W_{ih}$ $(20, 3)$ and $W_{hh}$ $(20, 5)$ (`a.chunk(4, dim=1)`
# splits them; `torch.cat(..., dim=1)` puts their gradients back in the same order).


# %%
def lstm_cell_backward(grad_output, x, h, c, W_ih, W_hh, b_ih, b_hh):
    # grad_output is the pair (dL/dh', dL/dc'): dh_new, dc_new = grad_output; recompute the gates and c' first
    dx = None  # your code here
    dh = None  # your code here
    dc = None  # your code here
    dW_ih = None  # your code here
    dW_hh = None  # your code here
    db_ih = None  # your code here
    db_hh = None  # your code here
    return dx, dh, dc, dW_ih, dW_hh, db_ih, db_hh


lstm_cell.check(lstm_cell_backward)

# %% [markdown]
# ### Exercise 3: the GRU cell
#
# $$[g^x_r, g^x_z, g^x_n] = x W_{ih}^\top + b_{ih}, \quad [g^h_r, g^h_z, g^h_n] = h W_{hh}^\top + b_{hh}$$
#
# $$r = \sigma(g^x_r + g^h_r), \quad z = \sigma(g^x_z + g^h_z), \quad n = \tanh(g^x_n + r \odot g^h_n), \quad
# h' = (1 - z) \odot n + z \odot h$$
#
# Given $\delta h'$, return $\delta x, \delta h, \delta W_{ih}, \delta W_{hh}, \delta b_{ih}, \delta b_{hh}$
# ($W_{ih}$ $(15, 3)$, $W_{hh}$ $(15, 5)$, gates stacked $r, z, n$). Mind that $h$ reaches $h'$ twice: through
# $g^h$ and directly through $z \odot h$; and that the input's and the state's gradients differ in the $n$ block.


# %%
def gru_cell_backward(grad_output, x, h, W_ih, W_hh, b_ih, b_hh):
    # recompute r, z, n (and g^h_n) first
    dx = None  # your code here
    dh = None  # your code here
    dW_ih = None  # your code here
    dW_hh = None  # your code here
    db_ih = None  # your code here
    db_hh = None  # your code here
    return dx, dh, dW_ih, dW_hh, db_ih, db_hh


gru_cell.check(gru_cell_backward)

# %% [markdown]
# Stuck? `rnn_cell.show_solution()` (and `lstm_cell`, `gru_cell`) prints the solution, each line naming the
# forward line it inverts; the package's own cells (`rnn.py`, `lstm.py`, `gru.py`) hold the same formulas in
# their `step_backward`. Next: run a whole sequence by calling your cell backward from $t = T-1$ down to $0$,
# adding $\partial L/\partial y_t$ to the state's gradient at each step, and compare with `LSTM.backward`.
