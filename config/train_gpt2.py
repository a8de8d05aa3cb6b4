# Reproduce GPT-2 small (124M) on OpenWebText, as nanoGPT does: 8x A100 40GB for ~4 days to val ~2.85.
#   python data/openwebtext/prepare.py
#   torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2.py
# Far beyond the laptops and single V100s babygpt is made for; kept to show the scale-up path.

wandb_log = False  # set True to follow a 4-day run from anywhere
wandb_project = 'owt'
wandb_run_name = 'gpt2-124M'
out_dir = 'out-gpt2'
dataset = 'openwebtext'  # GPT-2 BPE, no meta.pkl: vocab 50257 padded to 50304

# 12 x 1024 x 5 x 8 = 491,520 tokens per step, GPT-2's ~0.5M batch
batch_size = 12
block_size = 1024  # GPT-2's context
gradient_accumulation_steps = 5 * 8  # split over the GPUs by torchrun

n_layer = 12  # GPT-2 small's shape
n_head = 12
n_embd = 768
dropout = 0.0  # 9B tokens: no overfitting to fight
bias = False  # a bit faster, as good

learning_rate = 6e-4  # GPT-3 paper's value for a 125M model
max_iters = 600000  # ~300B tokens
lr_decay_iters = 600000
min_lr = 6e-5
weight_decay = 1e-1
beta2 = 0.95  # GPT-3's; large batches need less smoothing
warmup_iters = 2000

eval_interval = 1000
eval_iters = 200
log_interval = 10
dtype = 'bfloat16'  # A100 and newer; on a V100 use float16
