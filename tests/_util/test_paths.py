from toolkit._util.paths import shown


def test_shown_paths_are_relative_to_the_working_folder_or_its_parent(tmp_path, monkeypatch):
    (tmp_path / "repo" / "notebooks").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "repo")
    assert shown(tmp_path / "repo" / "cache" / "demo" / "report.html") == "cache/demo/report.html"
    monkeypatch.chdir(tmp_path / "repo" / "notebooks")  # a notebook's folder: the cache is one up
    assert shown(tmp_path / "repo" / "cache" / "run") == "../cache/run"
    assert shown(tmp_path / "elsewhere" / "x") == str(tmp_path / "elsewhere" / "x")  # two up: as given
    assert shown(tmp_path / "repo") == str(tmp_path / "repo")  # the parent itself: as given
