"""The attention explorer: sliders through images, layers, heads and query tokens of a ViT.

Two views of the same maps, computed once when the explorer is made:

- a live ipywidgets panel (ipywidgets 7.7 as on Colab, or 8), redrawn by the kernel;
- a kernel-free view: plain HTML range inputs and a canvas, with the maps embedded as numbers
  (uint8, on the explorer's one colour scale), so it works on a static page (``jupyter nbconvert
  --to html``, nbviewer, the committed notebook reopened and trusted) and in Colab without a widget
  manager. A click on its picture picks the query patch.
"""

from __future__ import annotations

import base64
import json
import sys
import uuid

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from torch import nn

from coursekit.maps import attention_maps, attention_rollout, self_share, token_map
from coursekit.train import eval_mode
from coursekit.viz import (display_image, figure_png, overlay, patch_square, patch_tokens, plot_attention_grid,
                           query_name, upsample)


def _uint8_b64(x: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(x, dtype=np.uint8).tobytes()).decode("ascii")


class AttentionExplorer:
    """Slide through the attention of ``model`` over ``images`` (live widgets + a kernel-free view).

    images: [B, C, H, W] (normalized like the training data); labels: optional [B] for the titles;
    classes: optional class names, so titles say "cat" rather than "3".
    Sliders pick the image, the layer, the head and the query token (0 = CLS, 1..P a patch, outlined);
    "mean over heads" averages the heads, "rollout" shows attention rollout up to the chosen layer.
    Every picture uses one colour scale for the whole explorer, 0 .. ``self.vmax`` (the largest
    token -> patch weight among all its maps), with a colourbar; the title gives the image, label,
    prediction and confidence, and what the query token keeps for itself.
    ``show_static()`` returns the layer x head grid of the current image as a figure.
    """

    def __init__(self, model: nn.Module, images: torch.Tensor, labels=None, smooth: bool = False,
                 dpi: int = 80, classes=None):
        import ipywidgets as w

        if not isinstance(images, torch.Tensor) or images.dim() != 4 or len(images) == 0:
            raise ValueError("images must be a non-empty tensor [B, C, H, W]; "
                             "for one image use images.unsqueeze(0)")
        if "google.colab" in sys.modules and int(w.__version__.split(".")[0]) >= 8:
            try:  # Colab draws ipywidgets 8 only with its custom manager; 7.7 it draws itself
                from google.colab import output
                output.enable_custom_widget_manager()
            except Exception:  # pragma: no cover - only on Colab
                pass
        self.model, self.images, self.smooth, self.dpi = model, images.detach().cpu(), smooth, dpi
        self.labels = None if labels is None else [int(y) for y in labels]
        self.classes = None if classes is None else list(classes)
        maps = attention_maps(model, self.images)  # [B, L, H, T, T], once for every image
        with torch.no_grad():
            device = next(model.parameters()).device
            with eval_mode(model):
                probs = torch.softmax(model(self.images.to(device)).float().cpu(), -1)
        self.confidence, self.predicted = (t.tolist() for t in probs.max(-1))
        rollouts = torch.stack([attention_rollout(maps[:, :n]) for n in range(1, maps.shape[1] + 1)], 1)
        self._maps, self._rollouts = maps, rollouts
        self.vmax = float(max(maps[..., 1:].max(), rollouts[..., 1:].max()))
        layers, heads, tokens = maps.shape[1], maps.shape[2], maps.shape[-1]
        self.image = w.IntSlider(value=0, min=0, max=len(images) - 1, description="image")
        self.layer = w.IntSlider(value=1, min=1, max=layers, description="layer")
        self.head = w.IntSlider(value=1, min=1, max=heads, description="head")
        self.query = w.IntSlider(value=0, min=0, max=tokens - 1, description="query")
        self.mean = w.Checkbox(value=False, description="mean over heads", indent=False)
        self.rollout = w.Checkbox(value=False, description="rollout", indent=False)
        self.picture = w.Image(format="png", width=340, height=300)
        self.caption = w.HTML()
        for control in (self.image, self.layer, self.head, self.query, self.mean, self.rollout):
            control.observe(lambda change: self.redraw(), names="value")
        self.widget = w.VBox([w.HBox([self.image, self.layer, self.head]),
                              w.HBox([self.query, self.mean, self.rollout]), self.caption, self.picture])
        self.redraw()

    def maps(self, index: int):
        """``(maps [layers, heads, T, T], rollouts [layers, T, T])`` of image ``index``, computed
        when the explorer was made; ``rollouts[l]`` rolls out layers 1..l+1."""
        return self._maps[index], self._rollouts[index]

    def name(self, label: int) -> str:
        """A class as the titles say it: its name when ``classes`` was given, else its number."""
        return str(label) if self.classes is None else self.classes[label]

    def title(self, index: int) -> str:
        """``"image 2: label 1, predicted 1 (99.8%)"``."""
        label = "" if self.labels is None else f"label {self.name(self.labels[index])}, "
        return (f"image {index}: {label}predicted {self.name(self.predicted[index])} "
                f"({100 * self.confidence[index]:.1f}%)")

    def current(self) -> tuple[torch.Tensor, str]:
        """The patch grid [g, g] the controls select, and a title for it."""
        maps, rollouts = self.maps(self.image.value)
        layer, h, q = self.layer.value - 1, self.head.value - 1, self.query.value
        self.head.disabled = self.mean.value or self.rollout.value
        if self.rollout.value:
            a, what = rollouts[layer], f"rollout of layers 1-{layer + 1}"
        elif self.mean.value:
            a, what = maps[layer].mean(0), f"Layer {layer + 1}, mean over heads"
        else:
            a, what = maps[layer, h], f"Layer {layer + 1}, Head {h + 1}"
        return token_map(a, q), f"{what}; {query_name(q)} to itself {float(self_share(a, q)):.2f}"

    def redraw(self) -> None:
        """Draw the selected map over the selected image into ``self.picture`` (one figure, kept:
        a redraw only swaps the arrays, the colourbar stays)."""
        from matplotlib.patches import Rectangle

        grid, what = self.current()
        i, q = self.image.value, self.query.value
        if not hasattr(self, "_fig"):
            self._fig = Figure(figsize=(3.4, 3), layout="constrained")
            ax = self._fig.subplots()
            im = overlay(ax, self.images[i], grid, self.vmax, self.smooth)
            self._fig.colorbar(im, ax=ax, shrink=0.8)
            self._gray, self._heat = ax.images
            self._mark = ax.add_patch(Rectangle((0, 0), 1, 1, fill=False, color="cyan", lw=1.5))
        ax, size = self._fig.axes[0], self.images.shape[-1]
        self._gray.set_data(display_image(self.images[i]))
        self._heat.set_data(upsample(grid, size, self.smooth).numpy())
        x, y, side = patch_square(max(q, 1), grid.shape[-1], size)
        self._mark.set(xy=(x, y), width=side, height=side, visible=q > 0)
        ax.set_title(f"{what}\nmax {float(grid.max()):.2f}", fontsize=7)
        self.picture.value = figure_png(self._fig, self.dpi)
        self.caption.value = f"{self.title(i)}; {query_name(q)} -> patches"

    def show_static(self) -> Figure:
        """The layer x head grid of the current image (query token as chosen), on one scale."""
        i = self.image.value
        return plot_attention_grid(self.maps(i)[0], self.images[i], self.title(i), self.query.value,
                                   smooth=self.smooth)

    # -- the kernel-free view -------------------------------------------------------------------
    def html(self) -> str:
        """A self-contained HTML/JavaScript view of all maps (no kernel, no widget manager needed).

        The maps travel as uint8 on the scale 0 .. vmax (steps of vmax/255); per image, layer
        and view (heads 1..H, mean over heads, rollout) the full [T, T] matrix, so every query works.
        Which patch token lies under each pixel, and each patch's square, come from :mod:`coursekit.viz`
        (the pictures' own numbering), so the JavaScript computes no patch position itself.
        """
        maps, rollouts = self._maps, self._rollouts
        views = torch.cat([maps, maps.mean(2, keepdim=True), rollouts[:, :, None]], dim=2)  # [B,L,H+2,T,T]
        q = (views / self.vmax).clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
        pixels = np.stack([display_image(img) if img.shape[0] == 1 else display_image(img).mean(-1)
                           for img in self.images]) * 255
        lut = (colormaps["inferno"](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)
        B, L, V, T, _ = q.shape
        size, g = int(self.images.shape[-1]), round((T - 1) ** 0.5)
        squares = [[x + 0.5, y + 0.5, side] for x, y, side in (patch_square(t, g, size) for t in range(1, T))]
        data = {"B": B, "L": L, "H": V - 2, "T": T, "S": size, "squares": squares,
                "tokens": patch_tokens(g, size).flatten().tolist(),
                "vmax": self.vmax, "titles": [self.title(i) for i in range(B)],
                "maps": _uint8_b64(q), "pixels": _uint8_b64(pixels.round()), "lut": _uint8_b64(lut)}
        uid = "ck-explorer-" + uuid.uuid4().hex[:12]
        return (_HTML.replace("__ID__", uid).replace("__DATA__", json.dumps(data))
                .replace("__MAXH__", str(V - 2)).replace("__MAXL__", str(L))
                .replace("__MAXB__", str(B - 1)).replace("__MAXQ__", str(T - 1)))

    def _ipython_display_(self):
        # display(widget) draws the widget view on ipywidgets 7 (its _ipython_display_) and 8 (its
        # _repr_mimebundle_); the kernel-free view follows as its own output, so it stays when the
        # widget state is gone (static pages, a reopened notebook).
        from IPython.display import HTML, display

        display(self.widget)
        display(HTML(self.html()))


_HTML = r"""<div id="__ID__" class="ck-explorer" style="font:12px sans-serif">
<div><b>Attention explorer, kernel-free view</b> (works on static pages; click the picture to pick a query patch)</div>
<label>image <input type="range" name="image" min="0" max="__MAXB__" value="0"></label>
<label>layer <input type="range" name="layer" min="1" max="__MAXL__" value="1"></label>
<label>head <input type="range" name="head" min="1" max="__MAXH__" value="1"></label>
<label><input type="checkbox" name="mean"> mean over heads</label>
<label><input type="checkbox" name="rollout"> rollout</label>
<label>query <input type="range" name="query" min="0" max="__MAXQ__" value="0"></label>
<div class="ck-title"></div>
<canvas class="ck-picture" width="280" height="280" style="cursor:crosshair"></canvas>
<canvas class="ck-bar" width="24" height="280"></canvas>
<span class="ck-scale"></span>
<script>
(function () {
  var s = document.currentScript;
  var root = (s && s.parentNode && s.parentNode.id === "__ID__") ? s.parentNode : document.getElementById("__ID__");
  var d = __DATA__;
  function bytes(b64) { var r = atob(b64), a = new Uint8Array(r.length);
    for (var i = 0; i < r.length; i++) a[i] = r.charCodeAt(i); return a; }
  var maps = bytes(d.maps), pixels = bytes(d.pixels), lut = bytes(d.lut);
  var V = d.H + 2, T = d.T, S = d.S, k = 280 / S;  // k: canvas pixels per image pixel
  var pic = root.querySelector(".ck-picture"), ctx = pic.getContext("2d");
  var bar = root.querySelector(".ck-bar"), bctx = bar.getContext("2d");
  function input(n) { return root.querySelector("[name=" + n + "]"); }
  function val(n) { return parseInt(input(n).value, 10); }
  for (var y = 0; y < 280; y++) { var c = Math.round(255 * (1 - y / 279));
    bctx.fillStyle = "rgb(" + lut[3 * c] + "," + lut[3 * c + 1] + "," + lut[3 * c + 2] + ")";
    bctx.fillRect(0, y, 24, 1); }
  root.querySelector(".ck-scale").textContent = "scale 0 .. " + d.vmax.toFixed(3) + " (one scale for every picture)";
  function draw() {
    var b = val("image"), l = val("layer") - 1, q = val("query");
    var v = input("rollout").checked ? V - 1 : (input("mean").checked ? V - 2 : val("head") - 1);
    input("head").disabled = v >= d.H;
    var base = (((b * d.L + l) * V + v) * T + q) * T;
    var img = ctx.createImageData(280, 280), px = img.data, a = 0.6, top = 0;
    for (var j = 1; j < T; j++) top = Math.max(top, maps[base + j]);
    for (var yy = 0; yy < 280; yy++) for (var xx = 0; xx < 280; xx++) {
      var pixel = Math.floor(yy / k) * S + Math.floor(xx / k), gray = pixels[b * S * S + pixel];
      var m = maps[base + d.tokens[pixel]];
      var o = 4 * (yy * 280 + xx);
      for (var ch = 0; ch < 3; ch++) px[o + ch] = Math.round((1 - a) * gray + a * lut[3 * m + ch]);
      px[o + 3] = 255; }
    ctx.putImageData(img, 0, 0);
    if (q > 0) { var sq = d.squares[q - 1]; ctx.strokeStyle = "cyan"; ctx.lineWidth = 2;
      ctx.strokeRect(sq[0] * k + 1, sq[1] * k + 1, sq[2] * k - 2, sq[2] * k - 2); }
    var what = v === V - 1 ? "rollout of layers 1-" + (l + 1) : (v === V - 2 ?
      "Layer " + (l + 1) + ", mean over heads" : "Layer " + (l + 1) + ", Head " + (v + 1));
    var who = q === 0 ? "CLS" : "patch " + q, own = maps[base + q] / 255 * d.vmax;
    root.querySelector(".ck-title").textContent = d.titles[b] + " | " + what + " | " + who +
      " -> patches, to itself " + own.toFixed(2) + ", max " + (top / 255 * d.vmax).toFixed(2);
    root.setAttribute("data-drawn", b + "," + l + "," + v + "," + q);
  }
  root.querySelectorAll("input").forEach(function (el) { el.addEventListener("input", draw);
    el.addEventListener("change", draw); });
  pic.addEventListener("click", function (e) { var r = pic.getBoundingClientRect();
    var x = Math.floor((e.clientX - r.left) / r.width * S), y = Math.floor((e.clientY - r.top) / r.height * S);
    function clamp(i) { return Math.max(0, Math.min(i, S - 1)); }
    input("query").value = d.tokens[clamp(y) * S + clamp(x)]; draw(); });
  draw();
})();
</script>
</div>"""
