# Fine-tune a shipped model (or any run of yours) on your own text, new characters included:
#   python data/chinese/prepare.py --input=my.txt --out_dir=data/mine --vocab_from=pretrained/hlm
#   python train.py config/finetune_chinese.py --dataset=mine --init_from=pretrained/hlm
#   python sample.py --out_dir=out-mine --ckpt=best.pt
# The model's shape (layers, width, context) comes from --init_from; `python experiments/finetune.py` measures
# this recipe against training from scratch (docs/benchmarks.md).

out_dir = 'out-mine'
init_from = 'pretrained/hlm'
dataset = 'mine'
eval_interval = 50  # a small text overfits within minutes: evaluate often, best.pt keeps the lowest val loss
eval_iters = 20  # 20 x 8 windows of 128: 20k characters of the val split, evenly spread
log_interval = 10
always_save_checkpoint = True

# measured on 苏轼's 宋诗 and 古文观止 from pretrained/hlm (docs/experiments.md): batch 8 at learning rate 2e-3
batch_size = 8  # more, smaller steps: the same characters move the model further in a few minutes
dropout = 0.0  # the decay toward the base below holds a fine-tune back instead: with it, dropout 0.1 cost 0.045
               # on 苏轼's 宋诗 and each step ~10% more time (docs/experiments.md)

learning_rate = 2e-3  # the base models' own peak: a new kind of text and new characters need large steps;
                      # from a model that already writes your kind of text (pretrained/poetry for poems) add
                      # --learning_rate=3e-4 --min_lr=3e-5: at 2e-3 it first unlearns what it knows
passes = 2.5  # the length follows your text: ~2.5 passes over it (550 steps for 250k characters: prepare, train,
              # sample in ~2 min on a 2-core CPU). On 古文观止's 128k, 300 steps beat 600 and 1,100
              # (docs/experiments.md). To give the steps yourself: --passes=0 --max_iters=N --lr_decay_iters=N
min_lr = 1e-4
beta2 = 0.99  # small batches: average the second moment over more steps
warmup_iters = 20
decay_to_start = True  # the decay pulls toward the base's weights, not toward zero: what the text does not
weight_decay = 3.0     # contradict stays as the base had it. With dropout 0, 3.0 was lower than 1.0 with
                       # dropout 0.1 on both texts, and the lowest of 2-5 on the two together; plain decay
                       # toward zero did worse (docs/experiments.md)

device = 'cpu'
dtype = 'float32'
compile = False
