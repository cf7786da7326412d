import re

from toolkit.al.loop import run_active_learning
from toolkit.cli import main
from toolkit.report.html import build_report


def test_report_has_every_section(tiny_cfg, tmp_path, monkeypatch):
    import dataclasses

    monkeypatch.chdir(tmp_path)  # feature caches for the representation sections go under ./cache
    runs = []
    for strategy in ("least_confidence", "random"):
        for seed in (0, 1):
            cfg = dataclasses.replace(tiny_cfg, seed=seed, al=dataclasses.replace(tiny_cfg.al, strategy=strategy),
                                      checkpoint_rounds=[0, -1] if strategy != "random" else [])
            run_active_learning(cfg, tmp_path / "runs" / f"{strategy}-{seed}", log=None)
            runs.append(tmp_path / "runs" / f"{strategy}-{seed}")
    out = build_report(runs, tmp_path / "report.html")
    page = out.read_text()
    for heading in ["Final budget", "Learning curves", "Label efficiency", "What gets acquired",
                    "Group separability", "before finetuning, after the seed set", "t-SNE maps", "Neighbourhoods"]:
        assert heading in page
    assert page.count("plotly.js") >= 1 and len(re.findall(r"<img class='thumb'", page)) >= 9
    assert "src=\"https://cdn" not in page  # self-contained: works offline
    monkeypatch.setattr("toolkit.report.figures._NO_BROWSER", [True])  # static files via matplotlib, as on a bare machine
    main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "r2.html"), "--no-representation",
          "--figures", str(tmp_path / "figs"), "--figure-format", "png"])
    page = (tmp_path / "r2.html").read_text()
    assert "t-SNE" not in page
    static = sorted((tmp_path / "figs").iterdir())
    assert len(static) == page.count('class="plotly-graph-div"') >= 4  # one file per figure on the page
    assert static[0].name.startswith("01_test_worst_group") and static[0].read_bytes()[:4] == b"\x89PNG"
