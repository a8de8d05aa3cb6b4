# A baseline for `python experiments/time_to_loss.py`: the CPU demo babygpt shipped before the adaptive head
# (4 layers, batch 32, compiled), to compare `make demo`'s recipe against it (docs/benchmarks.md).
#   python experiments/time_to_loss.py --baseline=experiments/config/baseline_old_demo.py

out_dir = 'out-baseline'
dataset = 'chinese'
batch_size = 32
block_size = 64
n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0
learning_rate = 2e-3
max_iters = 1200
lr_decay_iters = 1200
min_lr = 1e-4
beta2 = 0.99
warmup_iters = 100
compile = True
device = 'cpu'
dtype = 'float32'
