"""Does a distilled model use its rank? The eps-loss gap between a wrong and the right rank, on training images.

    python docs/benchmarks/distill/rank_gap_probe.py MODEL_DIR RANK_LR STEPS T_MIN

Loads a distilled model (MODEL_DIR, with MODEL_DIR/ranking.npz), factors its class table back into class + rank
vectors, prints the gap (loss with a random other rank minus loss with the image's own, 512 images, same noise) and
the mean rank-vector norm, then fine-tunes STEPS more steps (rank vectors at RANK_LR, the rest at 1e-4, timesteps
T_MIN..999) printing both every 100 steps. An exploration probe, not part of the package.
"""
import sys, time, torch, torch.nn.functional as F, numpy as np
from noveltynets.models import load_model, build_unet
from noveltynets.models.unet import UNET_CONFIG
from noveltynets.distill.model import RankedClassEmbedding
from noveltynets.distill.rank import Ranking
from noveltynets.data import load_split
torch.manual_seed(0)
d = load_model(sys.argv[1]); W = d.unet.class_embedding.weight.float()
unet = build_unet(); sd = {k: v for k, v in d.unet.state_dict().items() if not k.startswith('class_embedding')}
emb = RankedClassEmbedding(W[:11], 16)
with torch.no_grad(): emb.ranks.weight.copy_(torch.stack([W[11*r] - W[0] for r in range(1, 17)]))
unet.class_embedding = emb; unet.load_state_dict({**sd, **{'class_embedding.'+k: v for k, v in emb.state_dict().items()}})
rk = Ranking.load(sys.argv[1] + '/ranking.npz'); tr = load_split('train')
X = tr.images; C = torch.as_tensor(rk.classes); B = torch.as_tensor(rk.bin)
abar = d.alphas_cumprod
lr_rank = float(sys.argv[2]); steps = int(sys.argv[3]); tlo = int(sys.argv[4])
opt = torch.optim.AdamW([{'params': [p for n, p in unet.named_parameters() if not n.startswith('class_embedding.ranks')], 'lr': 1e-4},
                         {'params': [emb.ranks.weight], 'lr': lr_rank}], weight_decay=0)
unet.train()
g = torch.Generator().manual_seed(1)
def gap(n=512):
    # loss with the right rank minus with a random other rank, same noise
    with torch.no_grad():
        idx = torch.randint(len(X), (n,), generator=g); t = torch.randint(tlo, 1000, (n,), generator=g)
        e = torch.randn(X[idx].shape, generator=g); a = abar[t].view(-1,1,1,1); xt = a.sqrt()*X[idx] + (1-a).sqrt()*e
        right = C[idx] + 11*B[idx]; wrong = C[idx] + 11*((B[idx] - 1 + torch.randint(1, 16, (n,), generator=g)) % 16 + 1)
        lr_ = (unet(xt, t, class_labels=right).sample - e).pow(2).mean().item(); lw = (unet(xt, t, class_labels=wrong).sample - e).pow(2).mean().item()
        return lw - lr_
unet.eval(); print('start gap', gap(), 'norm', emb.ranks.weight.norm(dim=1).mean().item(), flush=True); unet.train()
t0 = time.time()
for s in range(steps):
    idx = torch.randint(len(X), (64,), generator=g)
    c, r = C[idx].clone(), B[idx].clone()
    c[torch.rand(64, generator=g) < 0.1] = 10; r[torch.rand(64, generator=g) < 0.2] = 0
    t = torch.randint(tlo, 1000, (64,), generator=g); e = torch.randn(X[idx].shape, generator=g); a = abar[t].view(-1,1,1,1)
    loss = F.mse_loss(unet(a.sqrt()*X[idx] + (1-a).sqrt()*e, t, class_labels=c + 11*r).sample, e)
    opt.zero_grad(); loss.backward(); opt.step()
    if (s+1) % 100 == 0:
        unet.eval(); print(s+1, 'gap', gap(), 'norm', emb.ranks.weight.norm(dim=1).mean().item(), round(time.time()-t0), flush=True); unet.train()
