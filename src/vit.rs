//! The Vision Transformer (Dosovitskiy et al., "An Image is Worth 16x16 Words"), built from tch's `nn`.
//!
//! Not a stack of `nn.Sequential` layers like the other architectures, so it is its own module: a
//! [`VitConfig`] (patch, width, depth, heads, MLP ratio, stored in `config.json`'s `model.vit`) and the
//! [`Vit`] it builds under an `nn::Path`. The pieces are the paper's: a convolution with stride = patch
//! size embeds the patches, a learned class token and position embedding (`vs.var`), pre-norm encoder
//! blocks (LayerNorm → multi-head self-attention through libtorch's `scaled_dot_product_attention` →
//! residual; LayerNorm → GELU MLP → residual), a final LayerNorm and a linear head on the class token.
//!
//! The tensors are named as timm's `VisionTransformer` names them (`patch_embed.proj.weight`,
//! `cls_token`, `pos_embed`, `blocks.0.attn.qkv.weight`, ..., `head.weight`), and `scripts/vit.py` is
//! the same module in plain `torch.nn`, so `model.safetensors` loads into it with `load_state_dict`.
//! The attention's query-key-value projection has no bias (timm's `qkv_bias=False`, see [`no_bias`]).
//! Initialisation is PyTorch's default for every `nn.Linear`, `nn.Conv2d` and `nn.LayerNorm`, a zero
//! class token and a N(0, 0.02) position embedding (torchvision's `VisionTransformer`).
//!
//! The frame is the model's `crate::frame::Frame` (channels, rows, columns); a side the patch does not divide is refused.

use crate::frame::Frame;
use anyhow::{Result, ensure};
use serde::{Deserialize, Serialize};
use tch::{Tensor, nn, nn::Module};

/// The ViT's own hyperparameters, as `config.json` stores them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VitConfig {
    /// Side of the square patches (the patch embedding's kernel and stride).
    pub patch: i64,
    /// Embedding width (the tokens' size).
    pub width: i64,
    /// Number of encoder blocks.
    pub depth: i64,
    /// Attention heads per block; divides `width`.
    pub heads: i64,
    /// The MLP's hidden width over `width`; `width × mlp_ratio` must be a whole number.
    pub mlp_ratio: f64,
}

impl Default for VitConfig {
    /// What `train --arch vit` builds without flags: 7x7 patches (16 tokens and the class token for
    /// 28x28), 64 wide, 4 blocks of 4 heads, an MLP twice as wide: about 0.14 M parameters, sized to train
    /// on a CPU in minutes per epoch.
    fn default() -> Self {
        VitConfig { patch: 7, width: 64, depth: 4, heads: 4, mlp_ratio: 2.0 }
    }
}

/// `--patch`, `--width`, `--depth`, `--heads`, `--mlp-ratio` as given: each defaults to [`VitConfig`]'s.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct VitFlags {
    pub patch: Option<i64>,
    pub width: Option<i64>,
    pub depth: Option<i64>,
    pub heads: Option<i64>,
    pub mlp_ratio: Option<f64>,
}

impl VitFlags {
    /// The first flag given, to refuse it for another architecture.
    pub fn first_given(&self) -> Option<&'static str> {
        [
            ("--patch", self.patch.is_some()),
            ("--width", self.width.is_some()),
            ("--depth", self.depth.is_some()),
            ("--heads", self.heads.is_some()),
            ("--mlp-ratio", self.mlp_ratio.is_some()),
        ]
        .into_iter()
        .find_map(|(flag, given)| given.then_some(flag))
    }

    /// The config these flags give, the defaults for those left out.
    pub fn config(&self) -> VitConfig {
        let d = VitConfig::default();
        VitConfig {
            patch: self.patch.unwrap_or(d.patch),
            width: self.width.unwrap_or(d.width),
            depth: self.depth.unwrap_or(d.depth),
            heads: self.heads.unwrap_or(d.heads),
            mlp_ratio: self.mlp_ratio.unwrap_or(d.mlp_ratio),
        }
    }
}

/// One named piece of the model for the summary table: its tensors with their sizes.
pub struct Part {
    pub name: String,
    pub kind: &'static str,
    /// Output shape of one example.
    pub shape: Vec<i64>,
    pub tensors: Vec<(String, i64)>,
}

impl VitConfig {
    /// Checks the sizes against `frame`: positive, heads dividing the width, the patch dividing both sides.
    pub fn check(&self, frame: Frame) -> Result<()> {
        let Frame { rows: height, cols: width, .. } = frame;
        ensure!(
            self.patch > 0 && self.width > 0 && self.depth > 0 && self.heads > 0,
            "--patch, --width, --depth and --heads must be positive (got {}, {}, {}, {})",
            self.patch,
            self.width,
            self.depth,
            self.heads
        );
        ensure!(
            self.width <= 1_000_000 && self.depth <= 1_000_000,
            "--width {} and --depth {} are too large",
            self.width,
            self.depth
        );
        ensure!(
            height % self.patch == 0 && width % self.patch == 0,
            "--patch {} does not divide the {height}x{width} images (try one of {})",
            self.patch,
            divisors(height.min(width))
                .iter()
                .filter(|&&d| height % d == 0 && width % d == 0)
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        ensure!(self.width % self.heads == 0, "--heads {} does not divide --width {}", self.heads, self.width);
        let mlp = self.width as f64 * self.mlp_ratio;
        ensure!(
            self.mlp_ratio > 0.0 && mlp.fract() == 0.0 && mlp <= 1e9,
            "--mlp-ratio {} times --width {} must be a positive whole number",
            self.mlp_ratio,
            self.width
        );
        Ok(())
    }

    /// The MLP's hidden width.
    pub fn mlp_dim(&self) -> i64 {
        (self.width as f64 * self.mlp_ratio) as i64
    }

    /// Patches per image.
    pub fn patches(&self, Frame { rows: height, cols: width, .. }: Frame) -> i64 {
        (height / self.patch) * (width / self.patch)
    }

    /// The pieces of the model, in order, with their tensors (timm's names) and output shapes.
    pub fn parts(&self, frame: Frame, classes: i64) -> Vec<Part> {
        let Frame { channels: c, rows: h, cols: w } = frame;
        let (p, d, m) = (self.patch, self.width, self.mlp_dim());
        let tokens = self.patches(frame) + 1;
        let linear =
            |name: String, i: i64, o: i64| vec![(format!("{name}.weight"), i * o), (format!("{name}.bias"), o)];
        let norm = |name: String| linear(name, 1, d);
        let mut parts = vec![
            Part {
                name: "patch_embed".into(),
                kind: "Conv2d",
                shape: vec![d, h / p, w / p],
                tensors: vec![("patch_embed.proj.weight".into(), d * c * p * p), ("patch_embed.proj.bias".into(), d)],
            },
            Part {
                name: "cls_token".into(),
                kind: "Parameter",
                shape: vec![tokens, d],
                tensors: vec![("cls_token".into(), d)],
            },
            Part {
                name: "pos_embed".into(),
                kind: "Parameter",
                shape: vec![tokens, d],
                tensors: vec![("pos_embed".into(), tokens * d)],
            },
        ];
        for i in 0..self.depth {
            let b = format!("blocks.{i}");
            let mut tensors = norm(format!("{b}.norm1"));
            tensors.push((format!("{b}.attn.qkv.weight"), d * 3 * d));
            tensors.extend(linear(format!("{b}.attn.proj"), d, d));
            tensors.extend(norm(format!("{b}.norm2")));
            tensors.extend(linear(format!("{b}.mlp.fc1"), d, m));
            tensors.extend(linear(format!("{b}.mlp.fc2"), m, d));
            parts.push(Part { name: b, kind: "Block", shape: vec![tokens, d], tensors });
        }
        parts.push(Part {
            name: "norm".into(),
            kind: "LayerNorm",
            shape: vec![tokens, d],
            tensors: norm("norm".into()),
        });
        parts.push(Part {
            name: "head".into(),
            kind: "Linear",
            shape: vec![classes],
            tensors: linear("head".into(), d, classes),
        });
        parts
    }

    /// Trainable parameters, `None` on overflow.
    pub fn parameters(&self, frame: Frame, classes: i64) -> Option<i64> {
        let Frame { channels: c, rows: h, cols: w } = frame;
        let (p, d, m) = (self.patch, self.width, self.mlp_dim());
        let tokens = (h / p).checked_mul(w / p)?.checked_add(1)?;
        let block = (4 * d).checked_add(d.checked_mul(3 * d)?)?.checked_add(d.checked_mul(d)? + d)?;
        let block = block.checked_add(d.checked_mul(m)?.checked_mul(2)?.checked_add(m + d)?)?;
        let embed = d
            .checked_mul(c.checked_mul(p * p)?)?
            .checked_add(d)?
            .checked_add(d)?
            .checked_add(tokens.checked_mul(d)?)?;
        embed
            .checked_add(block.checked_mul(self.depth)?)?
            .checked_add(2 * d)?
            .checked_add(d.checked_mul(classes)? + classes)
    }

    /// `28x28 ViT (patch 4, width 64, depth 4, heads 4, MLP 128)`.
    pub fn describe(&self, frame: Frame) -> String {
        format!(
            "{} ViT (patch {}, width {}, depth {}, heads {}, MLP {})",
            frame.size_text(),
            self.patch,
            self.width,
            self.depth,
            self.heads,
            self.mlp_dim()
        )
    }
}

fn divisors(n: i64) -> Vec<i64> {
    (1..=n.max(1)).filter(|d| n % d == 0).collect()
}

/// PyTorch's default initialisation of `nn.Linear` / `nn.Conv2d`: U(−1/√fan_in, 1/√fan_in).
fn pytorch_init(fan_in: i64) -> nn::Init {
    let bound = 1.0 / (fan_in as f64).sqrt();
    nn::Init::Uniform { lo: -bound, up: bound }
}

fn linear(vs: nn::Path, inputs: i64, outputs: i64) -> nn::Linear {
    let init = pytorch_init(inputs);
    nn::linear(vs, inputs, outputs, nn::LinearConfig { ws_init: init, bs_init: Some(init), bias: true })
}

/// The queries', keys' and values' projection has no bias (`qkv_bias=False` in timm's terms): a key bias
/// adds the same amount to every score of a query, which the softmax cancels, so its true gradient is 0
/// and Adam, dividing by the gradient's own scale, would walk it on rounding noise alone.
fn no_bias(inputs: i64) -> nn::LinearConfig {
    nn::LinearConfig { ws_init: pytorch_init(inputs), bs_init: None, bias: false }
}

fn layer_norm(vs: nn::Path, width: i64) -> nn::LayerNorm {
    nn::layer_norm(vs, vec![width], nn::LayerNormConfig::default())
}

/// One pre-norm encoder block.
#[derive(Debug)]
struct Block {
    norm1: nn::LayerNorm,
    qkv: nn::Linear,
    proj: nn::Linear,
    norm2: nn::LayerNorm,
    fc1: nn::Linear,
    fc2: nn::Linear,
    heads: i64,
}

impl Block {
    fn new(vs: nn::Path, config: &VitConfig) -> Block {
        let (d, m) = (config.width, config.mlp_dim());
        Block {
            norm1: layer_norm(&vs / "norm1", d),
            qkv: nn::linear(&vs / "attn" / "qkv", d, 3 * d, no_bias(d)),
            proj: linear(&vs / "attn" / "proj", d, d),
            norm2: layer_norm(&vs / "norm2", d),
            fc1: linear(&vs / "mlp" / "fc1", d, m),
            fc2: linear(&vs / "mlp" / "fc2", m, d),
            heads: config.heads,
        }
    }

    /// Queries, keys and values `[N, heads, T, d/heads]` of the normalised tokens `x` `[N, T, d]`.
    /// The batch stays `-1` in every view, so that a traced export takes any batch size.
    fn qkv(&self, x: &Tensor) -> (Tensor, Tensor, Tensor) {
        let (_, t, d) = x.size3().unwrap_or((0, 0, 0));
        let qkv = self.qkv.forward(x).view([-1, t, 3, self.heads, d / self.heads]).permute([2, 0, 3, 1, 4]);
        (qkv.get(0), qkv.get(1), qkv.get(2))
    }

    /// The block on tokens `x` `[N, T, d]`; with `attention`, the heads' attention weights are computed
    /// explicitly (softmax(QKᵀ/√d)) and pushed there, for `predict --explain`.
    fn forward(&self, x: &Tensor, dropout: f64, train: bool, attention: Option<&mut Vec<Tensor>>) -> Tensor {
        let (_, t, d) = x.size3().unwrap_or((0, 0, 0));
        let (q, k, v) = self.qkv(&self.norm1.forward(x));
        let heads = match attention {
            None => Tensor::scaled_dot_product_attention(&q, &k, &v, None::<Tensor>, 0.0, false, None, false),
            Some(maps) => {
                let scale = 1.0 / ((d / self.heads) as f64).sqrt();
                let weights = (q.matmul(&k.transpose(-2, -1)) * scale).softmax(-1, None);
                let out = weights.matmul(&v);
                maps.push(weights);
                out
            }
        };
        let attended = self.proj.forward(&heads.transpose(1, 2).reshape([-1, t, d])).dropout(dropout, train);
        let x = x + attended;
        let hidden = self.fc1.forward(&self.norm2.forward(&x)).gelu("none").dropout(dropout, train);
        &x + self.fc2.forward(&hidden).dropout(dropout, train)
    }
}

/// The Vision Transformer: input `[N, H, W]`, `[N, C, H, W]` or `[N, C·H·W]`, logits `[N, classes]`.
#[derive(Debug)]
pub struct Vit {
    frame: Frame,
    patch_embed: nn::Conv2D,
    cls_token: Tensor,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    norm: nn::LayerNorm,
    head: nn::Linear,
    dropout: f64,
}

impl Vit {
    /// Builds the model of `config` for `frame` and `classes` under `vs` (checked by [`VitConfig::check`]
    /// before), its weights drawn from libtorch's generator.
    pub fn new(vs: &nn::Path, config: &VitConfig, frame: Frame, classes: i64, dropout: f64) -> Vit {
        let (c, p, d) = (frame.channels, config.patch, config.width);
        let init = pytorch_init(c * p * p);
        let conv = nn::ConvConfig { stride: p, ws_init: init, bs_init: init, ..Default::default() };
        let patch_embed = nn::conv2d(vs / "patch_embed" / "proj", c, d, p, conv);
        let tokens = config.patches(frame) + 1;
        let cls_token = vs.var("cls_token", &[1, 1, d], nn::Init::Const(0.0));
        let pos_embed = vs.var("pos_embed", &[1, tokens, d], nn::Init::Randn { mean: 0.0, stdev: 0.02 });
        let blocks = (0..config.depth).map(|i| Block::new(vs / "blocks" / i, config)).collect();
        let norm = layer_norm(vs / "norm", d);
        let head = linear(vs / "head", d, classes);
        Vit { frame, patch_embed, cls_token, pos_embed, blocks, norm, head, dropout }
    }

    /// The class token and patch tokens `[N, T, d]` of images `xs`, position embedding added.
    fn tokens(&self, xs: &Tensor, train: bool) -> Tensor {
        let Frame { channels: c, rows: h, cols: w } = self.frame;
        let patches = self.patch_embed.forward(&xs.view([-1, c, h, w])).flatten(2, -1).transpose(1, 2);
        let cls = self.cls_token.expand_as(&patches.narrow(1, 0, 1));
        (Tensor::cat(&[cls, patches], 1) + &self.pos_embed).dropout(self.dropout, train)
    }

    fn logits(&self, x: &Tensor) -> Tensor {
        self.head.forward(&self.norm.forward(x).select(1, 0))
    }

    /// Logits and each block's attention weights `[N, heads, T, T]` (eval mode), for `predict --explain`.
    pub fn forward_with_attention(&self, xs: &Tensor) -> (Tensor, Vec<Tensor>) {
        let mut maps = Vec::with_capacity(self.blocks.len());
        let mut x = self.tokens(xs, false);
        for block in &self.blocks {
            x = block.forward(&x, 0.0, false, Some(&mut maps));
        }
        (self.logits(&x), maps)
    }

    /// The patch grid `(rows, cols)`.
    pub fn grid(&self, patch: i64) -> (i64, i64) {
        (self.frame.rows / patch, self.frame.cols / patch)
    }
}

impl nn::ModuleT for Vit {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut x = self.tokens(xs, train);
        for block in &self.blocks {
            x = block.forward(&x, self.dropout, train, None);
        }
        self.logits(&x)
    }
}

/// Attention rollout (Abnar & Zuidema 2020): the heads' mean attention of each block plus the identity
/// (the residual), rows renormalised, multiplied over the blocks; the class token's row over the patches,
/// `[N, patches]`, scaled to [0, 1] per image.
pub fn rollout(maps: &[Tensor]) -> Result<Tensor> {
    let mut joint: Option<Tensor> = None;
    for map in maps {
        let mean = map.f_mean_dim(1, false, None)?; // [N, T, T]
        let t = mean.size()[1];
        let eye = Tensor::eye(t, (mean.kind(), mean.device()));
        let a = mean.f_add(&eye)?;
        let a = a.f_div(&a.f_sum_dim_intlist(-1, true, None)?)?;
        joint = Some(match joint {
            None => a,
            Some(j) => a.f_matmul(&j)?,
        });
    }
    let Some(joint) = joint else { anyhow::bail!("a ViT without blocks has no attention") };
    let cls = joint.f_select(1, 0)?.f_narrow(1, 1, joint.size()[1] - 1)?; // [N, patches]
    let low = cls.f_amin(&[1i64][..], true)?;
    let range = cls.f_amax(&[1i64][..], true)?.f_sub(&low)?.f_clamp_min(1e-12)?;
    Ok(cls.f_sub(&low)?.f_div(&range)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, nn::ModuleT};

    const MNIST: Frame = Frame::MNIST;

    #[test]
    fn tensors_are_named_as_timm_and_counted() {
        let config = VitConfig { patch: 7, width: 16, depth: 2, heads: 2, mlp_ratio: 2.0 };
        let vs = nn::VarStore::new(Device::Cpu);
        let vit = Vit::new(&vs.root(), &config, MNIST, 10, 0.0);
        let mut built: Vec<(String, i64)> = vs.variables().into_iter().map(|(n, t)| (n, t.numel() as i64)).collect();
        built.sort();
        let mut described: Vec<(String, i64)> = config.parts(MNIST, 10).into_iter().flat_map(|p| p.tensors).collect();
        described.sort();
        assert_eq!(built, described);
        let total: i64 = built.iter().map(|(_, n)| n).sum();
        assert_eq!(config.parameters(MNIST, 10), Some(total));
        assert!(built.iter().any(|(n, _)| n == "blocks.1.attn.qkv.weight"));
        let x = Tensor::rand([3, 28, 28], (Kind::Float, Device::Cpu));
        let logits = vit.forward_t(&x, false);
        assert_eq!(logits.size(), vec![3, 10]);
        assert!(vit.forward_t(&x.view([3, 784]), false).equal(&logits));
        let (explicit, maps) = vit.forward_with_attention(&x);
        assert!(explicit.allclose(&logits, 1e-5, 1e-6, false), "explicit attention = SDPA");
        assert_eq!(maps.len(), 2);
        assert_eq!(maps[0].size(), vec![3, 2, 17, 17]);
        let map = rollout(&maps).unwrap();
        assert_eq!(map.size(), vec![3, 16]);
    }

    #[test]
    fn sizes_that_do_not_fit_are_refused_in_one_line() {
        let bad = VitConfig { patch: 5, ..VitConfig::default() }.check(MNIST).unwrap_err().to_string();
        assert!(
            bad.contains("--patch 5 does not divide the 28x28 images") && bad.contains("1, 2, 4, 7, 14, 28"),
            "{bad}"
        );
        let heads = VitConfig { heads: 5, ..VitConfig::default() }.check(MNIST).unwrap_err().to_string();
        assert!(heads.contains("--heads 5 does not divide --width 64"), "{heads}");
        assert!(VitConfig { mlp_ratio: 1.01, ..VitConfig::default() }.check(MNIST).is_err());
        assert!(VitConfig::default().check(MNIST).is_ok());
    }
}
