# Fine-tune pretrained GPT-2 (downloaded once by transformers) on a GPT-2 BPE dataset of your text.
#   python data/openwebtext/prepare.py --data_files=my_text.txt --out_dir=data/mytext
#   python train.py config/finetune_gpt2.py --dataset=mytext
#   python sample.py --out_dir=out-finetune --start="Once upon a time"
# Offline: --init_from=FOLDER with a GPT-2 saved by transformers' save_pretrained.

out_dir = 'out-finetune'
eval_interval = 5  # a short run: check often
eval_iters = 40
always_save_checkpoint = False  # keep the best: fine-tuning overfits a small text within a few steps

dataset = 'openwebtext'  # replace with your own prepared folder (see above)
init_from = 'gpt2'  # 124M; gpt2-medium/-large/-xl are better and much bigger (gpt2-xl needs ~40 GB to train)

# 1 x 32 x 1024 = 32,768 tokens per step
batch_size = 1  # one long sequence fits a 16 GB V100 with gpt2 in float16
block_size = 1024  # GPT-2's full context; lower it to save memory (positions are cropped)
gradient_accumulation_steps = 32

max_iters = 20  # a few passes over a small text is enough
learning_rate = 3e-5  # small and constant: nudge the pretrained weights, don't erase them
decay_lr = False
dropout = 0.1  # a little regularisation for a small corpus
