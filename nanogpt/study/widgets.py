"""An ipywidgets panel that classifies a review with the CE and BCE models of the study, side by side.

A person types (or picks a sample), presses the button, and sees each loss's label and P(positive) as a bar.
Headless (papermill, tests) the same path runs in code: set `panel.text.value`, call `panel.button.click()`,
read `panel.last_result`.
"""
from __future__ import annotations

import html

import ipywidgets as widgets
import pandas as pd

from nanogpt.run.results import study_checkpoints  # noqa: F401 (the panel's source of checkpoints, re-exported)
from nanogpt.serve.predict import Classifier

LOSS_TITLES = {"ce": "Cross-Entropy (2 logits)", "bce": "Binary Cross-Entropy (1 logit)"}


class ReviewPanel:
    def __init__(self, checkpoints: dict[str, list[tuple[str, str]]], samples: pd.DataFrame | None = None,
                 device: str = "cpu"):
        if not checkpoints:
            raise ValueError("No trained checkpoints to choose from. Fix: train the study first "
                             "(notebooks 02 and 03, or `python -m nanogpt study`).")
        self.device = device
        self._cache: dict[str, Classifier] = {}
        self.last_result: dict | None = None
        self.text = widgets.Textarea(placeholder="Type or paste a movie review...", rows=6,
                                     layout=widgets.Layout(width="100%"))
        self.model_choice = {
            loss: widgets.Dropdown(options=opts, value=opts[0][1], description=loss.upper(),
                                   layout=widgets.Layout(width="48%"))
            for loss, opts in checkpoints.items()
        }
        self.button = widgets.Button(description="Classify", button_style="primary", icon="search")
        self.button.on_click(lambda _: self.classify())
        self.message = widgets.HTML()
        self.bars = {loss: widgets.FloatProgress(min=0.0, max=1.0, value=0.0, description="P(positive)",
                                                 layout=widgets.Layout(width="90%"))
                     for loss in checkpoints}
        self.labels = {loss: widgets.HTML() for loss in checkpoints}
        sample_options = [("(pick a sample validation review)", "")]
        if samples is not None and len(samples):
            for _, r in samples.iterrows():
                tag = "positive" if int(r["label"]) == 1 else "negative"
                sample_options.append((f"[{tag}] {r['text'][:70]}...", r["text"]))
        self.samples = widgets.Dropdown(options=sample_options, value="", description="Samples",
                                        layout=widgets.Layout(width="100%"))
        self.samples.observe(self._use_sample, names="value")
        columns = [widgets.VBox([widgets.HTML(f"<b>{LOSS_TITLES.get(loss, loss)}</b>"), self.bars[loss],
                                 self.labels[loss]], layout=widgets.Layout(width="48%"))
                   for loss in checkpoints]
        self.widget = widgets.VBox([self.samples, self.text, widgets.HBox(list(self.model_choice.values())),
                                    self.button, self.message, widgets.HBox(columns)])

    def _use_sample(self, change) -> None:
        if change["new"]:
            self.text.value = change["new"]

    def _classifier(self, path: str) -> Classifier:
        if path not in self._cache:
            self._cache[path] = Classifier.load(path, device=self.device)
        return self._cache[path]

    def classify(self) -> dict | None:
        """Classify the text area with every loss's chosen model; show and return the result."""
        text = self.text.value
        if not isinstance(text, str) or not text.strip():
            self.message.value = "<span style='color:#a00'>Type a review first (the text box is empty).</span>"
            self.last_result = None
            return None
        result = {}
        try:
            for loss, choice in self.model_choice.items():
                pred = self._classifier(choice.value).predict(text)
                p = float(pred.probabilities[0])
                result[loss] = {"label": int(pred.labels[0]), "sentiment": pred.sentiments[0],
                                "positive_probability": p, "checkpoint": choice.value}
        except (ValueError, TypeError, OSError) as exc:  # a bad checkpoint or input: a message, not a traceback
            self.message.value = f"<span style='color:#a00'>{html.escape(str(exc))}</span>"
            self.last_result = None
            return None
        # Every model first, then the display: the page never shows one loss's new answer beside another's old one.
        for loss, r in result.items():
            p = r["positive_probability"]
            self.bars[loss].value = p
            self.bars[loss].bar_style = "success" if p > 0.5 else "danger"
            self.labels[loss].value = f"{html.escape(r['sentiment'])} (P(positive) = {p:.3f})"
        self.message.value = ""
        self.last_result = result
        return result
