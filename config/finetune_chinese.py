# Fine-tune a shipped model (or any run of yours) on your own text, new characters included:
#   python data/chinese/prepare.py --input=my.txt --out_dir=data/mine --vocab_from=pretrained/hlm
#   python train.py config/finetune_chinese.py --dataset=mine --init_from=pretrained/hlm
#   python sample.py --out_dir=out-mine --ckpt=best.pt
# The model's shape (layers, width, context) comes from --init_from; `python bench.py --what=finetune` measures
# this recipe against training from scratch (docs/benchmarks.md).

out_dir = 'out-mine'
init_from = 'pretrained/hlm'
dataset = 'mine'
eval_interval = 50  # a small text overfits within minutes: evaluate often, best.pt keeps the lowest val loss
eval_iters = 20  # 20 x 16 windows: all of a 30k-character val split
log_interval = 10
always_save_checkpoint = True

batch_size = 16
dropout = 0.1  # a few passes over a small text: some holding back pays

learning_rate = 1e-3  # half the base models' peak: large enough to learn new characters, small enough to keep the old
max_iters = 600  # ~10 minutes on a laptop CPU
lr_decay_iters = 600
min_lr = 1e-4
beta2 = 0.99  # small batches: average the second moment over more steps
warmup_iters = 20
weight_decay = 0.1

device = 'cpu'
dtype = 'float32'
compile = False
