# 红楼梦 on a 2-core laptop CPU: nanoGPT's CPU loss (val 4.57) in well under half its time (README, Demo on a CPU).
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
dropout = 0.0  # ~3 passes over the corpus: nothing to overfit yet
# an adaptive softmax: only the 1,024 most frequent characters (94% of the text) get the full-width head.
# A step takes ~0.57x the time of the full softmax (42.9 vs 75.1 ms, bench.py --what=train), but learns less
# per token (untied embeddings, a narrower tail): val 4.57 after ~1,300 steps instead of ~935, sooner overall.
# The default stays GPT-2's head; this checkpoint is babygpt's own (nanoGPT's sample.py cannot read it).
adaptive_head = 1024

learning_rate = 3e-3  # tried 2e-3 (val 4.63 after 900 steps) and 3e-3 (4.60): a small model takes a large step
max_iters = 1500  # a cosine over 1,122 steps ended at 4.58; over 1,500 it passes 4.57 at ~1,300 (1.3M tokens)
lr_decay_iters = 1500
min_lr = 1e-4
beta2 = 0.99  # small batches: average the second moment over more steps
warmup_iters = 50

device = 'cpu'
dtype = 'float32'  # fp16/bf16 autocast is slower than float32 on CPUs without AMX
compile = False  # measured no faster on this CPU (README, Training speed), and it costs start-up time
