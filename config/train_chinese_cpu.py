# 红楼梦 on a 2-core laptop CPU: nanoGPT's CPU loss (val 4.57) in about half its time (0.47x-0.66x across runs, README).
#   python data/chinese/prepare.py && python train.py config/train_chinese_cpu.py
# Measured side by side with nanoGPT's CPU recipe by `python bench.py --what=time_to_loss` (see README).

out_dir = 'out-chinese'  # same place as the GPU run, so sample.py --out_dir=out-chinese works
eval_interval = 400  # each eval costs ~2 s of forward passes here: a few are enough to see the trend
eval_iters = 30  # 30 x 16 = 480 fixed windows of each split (val has 927: half of it, evenly spread)
log_interval = 100
always_save_checkpoint = True

dataset = 'chinese'
batch_size = 16  # more, smaller steps: this config reached val 4.71 after 614k tokens, 4 layers x batch 32 only 4.79
block_size = 64  # 64 characters of context is a sentence or two of 红楼梦

# 2 layers, not nanoGPT's 4: with a 4.5k-character vocabulary lm_head is the biggest matmul, so half the
# layers cost only ~1/3 less time per token, and over the first ~1M tokens they learned no slower
n_layer = 2
n_head = 4
n_embd = 128
dropout = 0.0  # ~2 passes over the corpus: nothing to overfit yet

learning_rate = 3e-3  # tried 2e-3 (val 4.63 after 900 steps) and 3e-3 (4.60): a small model takes a large step
max_iters = 1200  # the cosine ends where the loss flattens: 4.56 at 1000, 4.54 at 1200 (1.2M tokens)
lr_decay_iters = 1200
min_lr = 1e-4
beta2 = 0.99  # small batches: average the second moment over more steps
warmup_iters = 50

device = 'cpu'
dtype = 'float32'  # fp16/bf16 autocast is slower than float32 on CPUs without AMX
compile = False  # measured no faster on this CPU (README, Training speed), and it costs start-up time
