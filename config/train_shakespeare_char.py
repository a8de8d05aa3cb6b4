# nanoGPT's classic baby GPT on tiny Shakespeare, character level (needs a GPU for the full run).
#   python data/shakespeare_char/prepare.py && python train.py config/train_shakespeare_char.py
# On a CPU: add --device=cpu --compile=False --max_iters=2000 --lr_decay_iters=2000 --n_layer=4
#   --n_head=4 --n_embd=128 --block_size=64 --batch_size=12 --dropout=0.0 (nanoGPT's CPU recipe).

out_dir = 'out-shakespeare-char'
eval_interval = 250  # 1M characters: the model overfits fast, so watch val loss often
eval_iters = 200
log_interval = 10
always_save_checkpoint = False  # the best val loss is worth keeping; later steps overfit

dataset = 'shakespeare_char'
gradient_accumulation_steps = 1
batch_size = 64
block_size = 256  # 256 characters of context

n_layer = 6  # ~10.7M weights: about as big as 1M characters can feed
n_head = 6
n_embd = 384
dropout = 0.2  # small corpus: regularise

learning_rate = 1e-3  # small models tolerate a large step
max_iters = 5000
lr_decay_iters = 5000  # equal to max_iters: decay over the whole run
min_lr = 1e-4  # learning_rate / 10
beta2 = 0.99  # few tokens per step: average the second moment longer
warmup_iters = 100
