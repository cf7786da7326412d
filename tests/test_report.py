import re

from toolkit.cli import main
from toolkit.loop import run_active_learning
from toolkit.report import build_report


def test_report_has_every_section(tiny_cfg, tmp_path, monkeypatch):
    import dataclasses

    monkeypatch.chdir(tmp_path)  # feature caches for the representation sections go under ./cache
    runs = []
    for strategy in ("least_confidence", "random"):
        for seed in (0, 1):
            cfg = dataclasses.replace(tiny_cfg, seed=seed, al=dataclasses.replace(tiny_cfg.al, strategy=strategy))
            run_active_learning(cfg, tmp_path / "runs" / f"{strategy}-{seed}", log=None)
            runs.append(tmp_path / "runs" / f"{strategy}-{seed}")
    out = build_report(runs, tmp_path / "report.html")
    page = out.read_text()
    for heading in ["Final budget", "Learning curves", "Label efficiency", "What gets acquired",
                    "Group separability", "t-SNE maps", "Neighbourhoods"]:
        assert heading in page
    assert page.count("plotly.js") >= 1 and len(re.findall(r"<img class='thumb'", page)) >= 9
    assert "src=\"https://cdn" not in page  # self-contained: works offline
    main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "r2.html"), "--no-representation"])
    assert "t-SNE" not in (tmp_path / "r2.html").read_text()
