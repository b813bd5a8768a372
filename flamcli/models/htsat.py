"""HTSAT: a Swin transformer over the folded log-mel image, read out as frame embeddings.

Parameter and buffer names follow the published HTSAT checkpoints (``patch_embed``,
``layers.i.blocks.j.attn.relative_position_bias_table``, ``layers.i.downsample.reduction``,
``norm``), so their state dicts load strictly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import AudioEncoderConfig, FrontendConfig
from .frontend import LogmelTower, normalise_and_fold, on_cpu
from .linear import Linear


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """[B, H, W, C] → [B·nW, window·window, C], windows and their tokens row-major."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_reverse(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    c = windows.shape[-1]
    b = windows.shape[0] // ((h // window) * (w // window))
    x = windows.view(b, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


@on_cpu
def relative_position_index(window: int) -> torch.Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij"))
    coords = coords.flatten(1)  # [2, window²]
    delta = coords[:, :, None] - coords[:, None, :] + (window - 1)
    return (delta[0] * (2 * window - 1) + delta[1]).long()


@on_cpu
def shifted_window_mask(h: int, w: int, window: int, shift: int) -> torch.Tensor:
    """[nW, window², window²] with 0 inside a region and −100 across regions."""
    labels = torch.zeros(1, h, w, 1)
    regions = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    count = 0
    for rows in regions:
        for cols in regions:
            labels[:, rows, cols, :] = count
            count += 1
    windows = window_partition(labels, window).squeeze(-1)
    diff = windows[:, None, :] - windows[:, :, None]
    return diff.ne(0).float() * -100.0


class WindowAttention(nn.Module):
    def __init__(self, dim: int, window: int, heads: int):
        super().__init__()
        self.heads = heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = Linear(dim, dim * 3)
        self.proj = Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None,
                residual: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B·nW, n, C] windows (batch-major); mask: [nW, n, n] or None; ``residual`` (shaped
        like x) is added to the output in the projection's epilogue."""
        bw, n, c = x.shape
        n_windows = 1 if mask is None else mask.shape[0]
        batch, head_dim = bw // n_windows, c // self.heads
        qkv = self.qkv(x).view(batch, n_windows, n, 3, self.heads, head_dim)
        # Windows and heads merged into one axis, [B, nW·heads, n, d]: the attention bias
        # depends on both but not on the batch, so it broadcasts as [1, nW·heads, n, n] and SDPA
        # takes its fused (flash) CPU kernel; 5-D inputs fall back to the unfused math path,
        # which is 2-3x slower here. The reshape is the one copy q, k and v need anyway.
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).reshape(
            3, batch, n_windows * self.heads, n, head_dim).unbind(0)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, self.heads).permute(2, 0, 1)  # [heads, n, n]
        attn_bias = bias if mask is None else bias[None] + mask[:, None]  # [nW, heads, n, n]
        attn_bias = attn_bias.reshape(1, n_windows * self.heads, n, n).to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias)
        out = out.view(batch, n_windows, self.heads, n, head_dim).transpose(2, 3)
        return self.proj(out.reshape(bw, n, c), residual=residual)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = Linear(dim, hidden)
        self.fc2 = Linear(hidden, dim)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """fc2(gelu(fc1(x))) (+ residual), the GELU and the add fused into the GEMMs."""
        return self.fc2(self.fc1(x, activation="gelu"), residual=residual)


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


@on_cpu
def window_order(grid: int, window: int, shift: int) -> torch.Tensor:
    """Token index permutation: rolled by −shift, then partitioned into windows.

    ``x[:, order]`` equals ``window_partition(roll(x, −shift))`` flattened: one gather instead
    of a roll copy plus a partition copy (``argsort(order)`` undoes both).
    """
    index = torch.arange(grid * grid).view(1, grid, grid, 1)
    if shift:
        index = torch.roll(index, shifts=(-shift, -shift), dims=(1, 2))
    return window_partition(index, window).reshape(-1)


class SwinBlock(nn.Module):
    def __init__(self, dim: int, grid: int, heads: int, window: int, shift: int, mlp_ratio: float,
                 drop_path_rate: float):
        super().__init__()
        if grid <= window:  # the whole grid is one window: nothing to shift
            window, shift = grid, 0
        self.grid, self.window, self.shift = grid, window, shift
        self.drop_path_rate = drop_path_rate
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        mask = shifted_window_mask(grid, grid, window, shift) if shift else None
        self.register_buffer("attn_mask", mask)
        order = window_order(grid, window, shift)
        # Derived from the geometry, never saved: the published state dicts do not hold them.
        self.register_buffer("token_order", order, persistent=False)
        self.register_buffer("token_restore", torch.argsort(order), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        tokens = self.window * self.window
        if self.training and self.drop_path_rate:
            h = self.norm1(x)[:, self.token_order].view(-1, tokens, c)
            h = self.attn(h, self.attn_mask).view(b, n, c)[:, self.token_restore]
            x = x + drop_path(h, self.drop_path_rate, self.training)
            return x + drop_path(self.mlp(self.norm2(x)), self.drop_path_rate, self.training)
        # Inference: permute x itself into window order (LayerNorm is per token, so it commutes
        # with the permutation); the attention's output projection then adds the residual in
        # its GEMM epilogue, and one gather restores the order. Same sums, one pass fewer.
        windows = x[:, self.token_order].view(-1, tokens, c)
        h = self.attn(self.norm1(windows), self.attn_mask, residual=windows)
        x = h.view(b, n, c)[:, self.token_restore]
        return self.mlp(self.norm2(x), residual=x)


class PatchMerging(nn.Module):
    def __init__(self, dim: int, grid: int):
        super().__init__()
        self.grid = grid
        self.reduction = Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, c = x.shape
        x = x.view(b, self.grid, self.grid, c)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.reshape(b, -1, 4 * c)))


class SwinStage(nn.Module):
    def __init__(self, dim: int, grid: int, depth: int, heads: int, config: AudioEncoderConfig,
                 drop_rates: list[float], downsample: bool):
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, grid, heads, config.window_size,
                      config.window_size // 2 if i % 2 else 0, config.mlp_ratio, drop_rates[i])
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim, grid) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x) if self.downsample is not None else x


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class HTSATEncoder(LogmelTower):
    """[B, samples] → frame features [B, frames_per_window, out_dim]."""

    def __init__(self, frontend: FrontendConfig, config: AudioEncoderConfig):
        super().__init__(frontend)
        self.config = config
        self.patch_embed = PatchEmbed(config.patch_size, config.embed_dim)
        total_blocks = sum(config.depths)
        rates = [config.drop_path_rate * i / max(total_blocks - 1, 1) for i in range(total_blocks)]
        grid = config.spec_size // config.patch_size
        stages, start = [], 0
        for i, (depth, heads) in enumerate(zip(config.depths, config.num_heads)):
            last = i == len(config.depths) - 1
            stages.append(SwinStage(config.embed_dim * 2**i, grid, depth, heads, config,
                                    rates[start:start + depth], downsample=not last))
            start += depth
            grid = grid if last else grid // 2
        self.layers = nn.ModuleList(stages)
        self.norm = nn.LayerNorm(config.out_dim)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        x = normalise_and_fold(self.logmel(waveform), self.bn0, cfg)
        x = self.patch_embed(x)
        for stage in self.layers:
            x = stage(x)
        x = self.norm(x)  # [B, G·G, C], grid rows = (time chunk, mel part), cols = time
        b, _, c = x.shape
        g = cfg.final_grid
        mel_parts = g // cfg.freq_ratio
        x = x.view(b, cfg.freq_ratio, mel_parts, g, c).mean(dim=2)  # average the mel parts
        return x.reshape(b, cfg.freq_ratio * g, c)  # frame n = g·k + column
