"""Prototype: a memory that regresses a soft proximity to history (distilled nearest-neighbour kernel)."""
import math, torch, torch.nn as nn, torch.nn.functional as F

class ProxMem:
    def __init__(self, dim, ref, n_final, hidden=512, fourier=256, smin=0.3, smax=3.0, r=0.7, steps=40, batch=256, jit=1.5, seed=0, lr=1e-3, raw=False, vec=False, vec_weight=1.0):
        g = torch.Generator().manual_seed(seed); torch.manual_seed(seed)
        self.mean = ref[:n_final].mean(0)
        d = torch.cdist(ref[:n_final], ref[:n_final]); d.fill_diagonal_(float("inf"))
        self.ell = float(d.min(1).values.median())  # z = (x - mean) / ell: the pool's NN distance is 1
        self.ref = ref; self.r, self.steps, self.batch, self.jit, self.raw = r, steps, batch, jit, raw
        sig = torch.logspace(math.log10(smin), math.log10(smax), fourier)
        self.freqs = torch.randn(dim, fourier, generator=g) * sig
        inp = 2 * fourier + (dim if raw else 0)
        self.vec, self.vec_weight = vec, vec_weight
        self.net = nn.Sequential(nn.Linear(inp, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1 + (dim if vec else 0)))
        self.opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.hist = torch.zeros(0, dim); self.gen = g
    def z(self, x): return (x - self.mean) / self.ell
    def logit(self, x):
        z = self.z(x); f = z @ self.freqs
        h = torch.cat([f.sin(), f.cos()] + ([z / math.sqrt(z.shape[1])] if self.raw else []), -1)
        return self.net(h)[:, 0]
    def out(self, x):
        z = self.z(x); f = z @ self.freqs
        h = torch.cat([f.sin(), f.cos()] + ([z / math.sqrt(z.shape[1])] if self.raw else []), -1)
        return self.net(h)
    def direction(self, x):
        if not self.vec:
            x = x.detach().requires_grad_(True)
            with torch.enable_grad():
                return -torch.autograd.grad(self.logit(x).sum(), x)[0]
        return self.out(x)[:, 1:]
    def target(self, q):
        zq, zh = self.z(q), self.z(self.hist)
        d2 = torch.cdist(zq, zh).pow(2)
        y = torch.exp(-d2.min(1).values / (2 * self.r ** 2))
        if not self.vec:
            return y, None
        w = torch.softmax(-d2 / (2 * self.r ** 2), 1)
        away = zq - w @ zh  # soft-nearest displacement, in units of ell
        return y, away * y[:, None]
    def _jitter(self, x):
        lvl = torch.rand(len(x), 1, generator=self.gen) * self.jit * self.ell / math.sqrt(x.shape[1])
        return x + lvl * torch.randn(x.shape, generator=self.gen)
    def observe(self, e, traj=None):
        new = torch.cat([e] + ([traj] if traj is not None else []))
        self.hist = torch.cat([self.hist, new])
        h = self.batch // 2
        for _ in range(self.steps):
            pos = torch.cat([new[:h], self.hist[torch.randint(len(self.hist), (max(0, h - len(new)),), generator=self.gen)]])
            neg = self.ref[torch.randint(len(self.ref), (h,), generator=self.gen)]
            q = self._jitter(torch.cat([pos, neg]))
            y, v = self.target(q)
            o = self.out(q)
            loss = F.binary_cross_entropy_with_logits(o[:, 0], y)
            if v is not None:
                loss = loss + self.vec_weight * (o[:, 1:] - v).pow(2).sum(1).mean()
            self.opt.zero_grad(); loss.backward(); self.opt.step()
        return float(loss)
