# A baseline for `python experiments/time_to_loss.py` (the default one): nanoGPT's recipe for a laptop CPU
# (its README's command, with its char-level config's learning rate, schedule and beta2), run on 红楼梦
# through babygpt's train.py, so the same model code and speed per token: only the recipe differs.
#   python experiments/time_to_loss.py --baseline=experiments/config/baseline_nanogpt_cpu.py

out_dir = 'out-baseline'
dataset = 'chinese'
batch_size = 12
block_size = 64
n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0
learning_rate = 1e-3
max_iters = 2000
lr_decay_iters = 2000
min_lr = 1e-4
beta2 = 0.99
warmup_iters = 100
compile = False
device = 'cpu'
dtype = 'float32'
