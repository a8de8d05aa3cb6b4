# 红楼梦 on a 2-core laptop CPU: a few minutes, and text that reads like the novel's style.
#   python data/chinese/prepare.py && python train.py config/train_chinese_cpu.py
# Measured on a 2-core CPU (see README): ~4 minutes of training, val loss 4.42 at step 1200
# (nanoGPT's CPU recipe, 4x4x128 with batch 12, reaches 4.57 in about 3.5 minutes here).

out_dir = 'out-chinese'  # same place as the GPU run, so sample.py --out_dir=out-chinese works
eval_interval = 250
eval_iters = 20  # each eval is extra forward passes; 20 batches are enough to see the trend
log_interval = 100
always_save_checkpoint = True

dataset = 'chinese'
batch_size = 32  # ~2,000 tokens per step: more than nanoGPT's 12 x 64, for less noisy steps
block_size = 64  # 64 characters of context is a sentence or two of 红楼梦

# the 4.5k-character vocabulary makes lm_head the biggest matmul, so the body stays small
n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0  # 2,000 steps of 2k tokens see the corpus ~7 times: too few to overfit a 1.4M model

learning_rate = 2e-3  # a small model takes a large step
max_iters = 1200  # ~4 minutes here; 2000 reach val 4.34 in ~7
lr_decay_iters = 1200
min_lr = 1e-4
beta2 = 0.99  # small batches: average the second moment over more steps
warmup_iters = 100

device = 'cpu'
dtype = 'float32'  # fp16/bf16 autocast is slower than float32 on CPUs without AMX
compile = True  # measured ~15% fewer ms per step for a model this size on this CPU; falls back if it fails
