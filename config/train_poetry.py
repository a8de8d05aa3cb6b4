# The shipped poetry model (pretrained/poetry): all the classical verse of the corpus package but 苏轼's, at
# character level, on a 2-core CPU in about 100 minutes of training (`make poetry` runs all three commands).
#   python data/poetry/prepare.py --include=tang,ci,song,yuanqu,shijing,chuci,wudai,caocao,nalan \
#       --hold_out=苏轼 --out_dir=data/poetry-all
#   python train.py config/train_poetry.py
#   python pretrained/export.py --out_dir=out-poetry --to=pretrained/poetry --poems=200
# 苏轼 is held out so that experiments/finetune.py measures fine-tuning on poems the model never saw.
# How the values were chosen, and what the model reaches: docs/experiments.md, pretrained/poetry/README.md.

out_dir = 'out-poetry'
eval_interval = 250
eval_iters = 10  # 10 x 32 = 320 windows of 128, spread evenly over the val poems (export measures them all)
log_interval = 50
always_save_checkpoint = True  # ckpt.pt for resume; best.pt (lowest val loss) is what export takes

dataset = 'poetry-all'
batch_size = 32
block_size = 128  # a 七律 with its title is ~80 characters: the model sees a whole poem and where it ends

# as wide as the 红楼梦 model: 12.3k characters make the embedding half the weights (~10 MB in float16, under 25)
n_layer = 6
n_head = 4
n_embd = 192
dropout = 0.0  # 23.9M training characters, seen less than once: nothing to hold back

learning_rate = 2e-3  # the 红楼梦 model's: a small model takes a large step
max_iters = 4500  # ~1.3 s an iteration on 2 cores: ~100 minutes, 0.8 passes over the poems
lr_decay_iters = 4500
min_lr = 1e-4
beta2 = 0.99  # small batches: average the second moment over more steps
warmup_iters = 100

device = 'cpu'
dtype = 'float32'
compile = False
