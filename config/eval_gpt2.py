# Evaluate OpenAI's gpt2 (124M; val ~3.12 on OpenWebText in nanoGPT's README): no training, one loss estimate.
#   python data/openwebtext/prepare.py && python train.py config/eval_gpt2.py
batch_size = 8
eval_iters = 500  # 500 x 8 x 1024 tokens: a steady estimate
eval_only = True  # estimate the losses once and exit; nothing is saved
wandb_log = False
init_from = 'gpt2'  # downloaded once by transformers, or --init_from=FOLDER offline
dataset = 'openwebtext'  # GPT-2 BPE, the tokens the model was trained on
block_size = 1024  # GPT-2's full context
compile = False  # one pass: compiling would cost more than it saves
