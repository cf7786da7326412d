from toolkit._util.paths import shown


def test_shown_paths_are_relative_to_the_working_folder_or_within_the_checkout(tmp_path, monkeypatch):
    (tmp_path / "repo" / "notebooks").mkdir(parents=True)
    monkeypatch.setattr("toolkit._util.paths._CHECKOUT", tmp_path / "repo")
    monkeypatch.chdir(tmp_path / "repo")
    assert shown(tmp_path / "repo" / "cache" / "demo" / "report.html") == "cache/demo/report.html"
    monkeypatch.chdir(tmp_path / "repo" / "notebooks")  # a notebook's folder: the cache is in the same checkout
    assert shown(tmp_path / "repo" / "cache" / "run") == "../cache/run"
    assert shown(tmp_path / "elsewhere" / "x") == str(tmp_path / "elsewhere" / "x")  # outside the checkout: as given
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")  # a folder outside the checkout: only what lies inside it is shortened
    assert shown(tmp_path / "repo" / "cache" / "run") == str(tmp_path / "repo" / "cache" / "run")
    assert shown(tmp_path / "work" / "out") == "out"
