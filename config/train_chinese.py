# The GPU run: a 9-layer character-level GPT on 红楼梦, sized for one V100-class GPU.
#   python data/chinese/prepare.py && python train.py config/train_chinese.py
# Far too slow on a CPU (hours): use train_chinese_cpu.py there.

out_dir = 'out-chinese'
eval_interval = 250  # evaluate often: on one H200 val is lowest near step 500 (4.31) and 5.42 by step 2,000,
                     # as 18M weights memorise 535k characters; best.pt keeps the lowest
eval_iters = 200
log_interval = 10  # don't print every iteration

# the corpus is small, so val loss stops improving early; save anyway (see train.py)
always_save_checkpoint = True

wandb_log = False  # --wandb_log=True to follow the run online
wandb_project = 'chinese'
wandb_run_name = 'mini-gpt'

dataset = 'chinese'
gradient_accumulation_steps = 1
batch_size = 64
block_size = 256  # context of up to 256 previous characters

# a baby GPT: 9 layers x 12 heads x 384 dims, ~18M weights with the 4.5k-character vocabulary
n_layer = 9
n_head = 12
n_embd = 384
dropout = 0.2  # a small corpus: regularise hard

learning_rate = 1e-3  # baby networks can afford a higher learning rate
max_iters = 2000
lr_decay_iters = 2000  # equal to max_iters: decay over the whole run
min_lr = 1e-4  # learning_rate / 10
beta2 = 0.99  # a bit bigger because the number of tokens per iteration is small

warmup_iters = 100  # a gentle start for the first steps' noisy gradients
