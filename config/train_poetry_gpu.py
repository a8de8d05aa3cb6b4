# The shipped poetry model as a GPU trains it: the same corpus as config/train_poetry.py (prepare it first), a
# wider and deeper model and many passes, sized so that pretrained/export.py's float16 folder stays under 25 MB.
#   python train.py config/train_poetry_gpu.py
#   python pretrained/export.py --out_dir=out-poetry --to=pretrained/poetry --poems=200
# `make poetry` picks this file when torch sees a GPU. fp16 with a GradScaler: a V100 has no bf16.

out_dir = 'out-poetry'
eval_interval = 500
eval_iters = 40  # 40 x 64 windows of 128: a fifth of the val split, at fixed offsets
log_interval = 50
always_save_checkpoint = True  # ckpt.pt for resume; best.pt (lowest val loss) is what export takes

dataset = 'poetry-all'
batch_size = 64
block_size = 128  # a 七律 with its title is ~80 characters: the model sees a whole poem and where it ends

# 11.6M weights, 23 MB in float16: the embedding of 12.3k characters is a third of them
n_layer = 8
n_head = 6
n_embd = 288
dropout = 0.1  # ~7 passes over 23.9M characters: some regularisation

learning_rate = 1e-3
max_iters = 20000  # 64 x 128 x 20,000 = 164M characters, ~7 passes
lr_decay_iters = 20000
min_lr = 1e-4
beta2 = 0.99
warmup_iters = 500

device = 'cuda'
dtype = 'float16'
compile = True
