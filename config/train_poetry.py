# The shipped poetry model (pretrained/poetry): 唐诗 and 宋词 at character level on a 2-core CPU, about an hour.
#   python data/poetry/prepare.py --include=tang,ci && python train.py config/train_poetry.py
#   python pretrained/export.py --out_dir=out-poetry --to=pretrained/poetry
# How the values were chosen, and what the model reaches: docs/experiments.md, pretrained/poetry/README.md.

out_dir = 'out-poetry'
eval_interval = 250
eval_iters = 10  # 10 x 32 = 320 windows of 128, spread evenly over the val poems (export measures them all)
log_interval = 50
always_save_checkpoint = True  # ckpt.pt for resume; best.pt (lowest val loss) is what export takes

dataset = 'poetry'
batch_size = 32
block_size = 128  # a 七律 with its title is ~80 characters: the model sees a whole poem and where it ends

# as wide as the 红楼梦 model: 9.1k characters make the embedding 40% of the weights (~9 MB in float16, under 15)
n_layer = 6
n_head = 4
n_embd = 192
dropout = 0.0  # 5.6M training characters, seen about once: nothing to hold back yet

learning_rate = 2e-3  # the 红楼梦 model's: a small model takes a large step
max_iters = 1600  # ~1.2 passes over the poems
lr_decay_iters = 1600
min_lr = 1e-4
beta2 = 0.99  # small batches: average the second moment over more steps
warmup_iters = 100

device = 'cpu'
dtype = 'float32'
compile = False
