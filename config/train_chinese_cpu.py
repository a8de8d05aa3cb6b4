# 红楼梦 on a 2-core laptop CPU: nanoGPT's CPU loss (val 4.57) in under half its time.
#   python data/chinese/prepare.py && python train.py config/train_chinese_cpu.py
# `python experiments/time_to_loss.py` times it against nanoGPT's CPU recipe (docs/benchmarks.md);
# what each value was tried against: docs/experiments.md.

out_dir = 'out-chinese'  # same place as the GPU run, so sample.py --out_dir=out-chinese works
eval_interval = 400  # evals cost forward passes: a few are enough to see the trend
eval_iters = 30  # 30 x 16 = 480 fixed windows of each split (val has 927: half of it, evenly spread)
log_interval = 100
always_save_checkpoint = True

dataset = 'chinese'
batch_size = 16  # more, smaller steps: val fell faster per token than at batch 32
block_size = 64  # 64 characters of context is a sentence or two of 红楼梦

# 2 layers, not nanoGPT's 4: with a 4.5k-character vocabulary lm_head is the biggest matmul, and over the
# first ~1M tokens 2 layers learn no slower than 4
n_layer = 2
n_head = 4
n_embd = 128
dropout = 0.0  # ~3 passes over the corpus: nothing to overfit yet
# an adaptive softmax: only the 1,024 most frequent characters (94% of the text) get the full-width head.
# A step takes ~0.57x the full softmax's time (`python bench.py --what=train` against --adaptive_head=0) but
# learns less per token, so val 4.57 comes sooner overall. nanoGPT's sample.py cannot read this checkpoint.
adaptive_head = 1024

learning_rate = 3e-3  # a small model takes a large step (2e-3 and 4e-3 did worse)
max_iters = 1500  # the cosine must run past the step where val reaches 4.57 (~1,300)
lr_decay_iters = 1500
min_lr = 1e-4
beta2 = 0.99  # small batches: average the second moment over more steps
warmup_iters = 50

device = 'cpu'
dtype = 'float32'  # fp16/bf16 autocast is slower than float32 on CPUs without AMX
compile = False  # barely faster per step (`python bench.py --what=train --compile=True`) and slow to start
