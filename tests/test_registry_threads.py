"""The registry's entry-point scan from several threads (gengraph.run from two threads at once).

A thread that asked for a kind while another was still reading the entry points used to see none
of them ("unknown model kind ... is not installed"): the scan was marked done before it was.
"""

import subprocess
import sys
import textwrap
import threading
from importlib.metadata import EntryPoint

from gengraph.plugins import registry
from gengraph.plugins.registry import Registry

GROUP = "gengraph.test_threads"


def test_a_thread_waits_for_a_scan_in_progress(monkeypatch):
    started, release = threading.Event(), threading.Event()

    def slow_entry_points(group):  # the first scan stops here until the second thread has asked
        started.set()
        release.wait(10)
        return [EntryPoint("k", "json:dumps", group)]

    monkeypatch.setattr(registry.metadata, "entry_points", slow_entry_points)
    reg = Registry("model kind", GROUP)
    seen = {}
    first = threading.Thread(target=lambda: seen.setdefault("first", reg.names()))
    first.start()
    assert started.wait(10)
    second = threading.Thread(target=lambda: seen.setdefault("second", reg.names()))
    second.start()
    second.join(0.5)  # it must be waiting for the scan, not answering from half of it
    release.set()
    first.join(10)
    second.join(10)
    assert seen == {"first": ["k"], "second": ["k"]}


def test_a_failed_scan_is_not_marked_done(monkeypatch):
    calls = []

    def failing_then_fine(group):
        calls.append(group)
        if len(calls) == 1:
            raise OSError("metadata unreadable")
        return [EntryPoint("k", "json:dumps", group)]

    monkeypatch.setattr(registry.metadata, "entry_points", failing_then_fine)
    reg = Registry("model kind", GROUP)
    try:
        reg.names()
    except OSError:
        pass
    assert reg.names() == ["k"]


def test_threads_of_a_fresh_process_all_find_the_installed_kinds():
    # the registry of this test process is warm: the first scan happens in a new one
    code = textwrap.dedent("""
        import threading
        from gengraph.plugins.model import MODELS
        barrier, errors = threading.Barrier(4), []
        def get():
            barrier.wait()
            try:
                MODELS.get("mlp")
            except Exception as exc:
                errors.append(str(exc))
        threads = [threading.Thread(target=get) for _ in range(4)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        print(errors or "ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_a_scoped_block_undoes_only_its_own_threads_registrations():
    # two threads each loading a local plugin (gengraph.run(..., plugins=...)): the first block to
    # end restored its snapshot and removed the other thread's plugin while that call still ran
    reg = Registry("model kind")
    reg.register("builtin", "B")
    a_in, b_in, a_done = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def a():
        with reg.scoped():
            reg.register("mine_a", "A")
            a_in.set()
            b_in.wait(10)
        a_done.set()

    def b():
        with reg.scoped():
            a_in.wait(10)
            reg.register("mine_b", "Bp")
            reg.register("builtin", "shadow", replace=True)
            b_in.set()
            a_done.wait(10)
            seen["b"] = (reg.get("mine_b"), reg.get("builtin"), "mine_a" in reg.names())

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    [t.start() for t in threads]
    [t.join(20) for t in threads]
    assert seen["b"] == ("Bp", "shadow", False)  # b's own, still there after a's block ended
    assert reg.names() == ["builtin"] and reg.get("builtin") == "B"  # both undone, the built-in back
    with reg.scoped():  # nested blocks on one thread
        reg.register("x", 1)
        with reg.scoped():
            reg.register("x", 2, replace=True)
            reg.register("y", 3)
        assert reg.get("x") == 1 and "y" not in reg.names()
    assert "x" not in reg.names()


def test_two_threads_loading_the_same_plugin_file_keep_their_own_kinds(tmp_path):
    # the first block to end removed the kind the other thread was still running, and the kind
    # stayed registered for good after both; a part the file registers was refused the second time
    from pathlib import Path

    from gengraph.plugins.blocks.layer_base import ACTIVATIONS
    from gengraph.plugins.model import MODELS
    from gengraph.plugins.run.loading import plugin_files

    base = (Path(__file__).resolve().parents[1] / "examples" / "plugin_polyfit.py").read_text()
    path = tmp_path / "samefile.py"
    path.write_text(base.replace('    kind = "polyfit"', '    kind = "samefile"') +
                    "\nfrom gengraph.plugins.blocks.layer_base import ACTIVATIONS\n"
                    "ACTIVATIONS.register('samefile_act', lambda x: x)\n")
    a_in, b_in, a_done = threading.Event(), threading.Event(), threading.Event()
    seen, errors = {}, []

    def a():
        try:
            with plugin_files([path]):
                a_in.set()
                b_in.wait(10)
            a_done.set()
        except Exception as exc:  # noqa: BLE001 -- reported below
            errors.append(exc)
            a_done.set()

    def b():
        try:
            a_in.wait(10)
            with plugin_files([path]):
                b_in.set()
                a_done.wait(10)
                seen["b"] = ("samefile" in MODELS.names(), "samefile_act" in ACTIVATIONS.names())
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
            b_in.set()

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    [t.start() for t in threads]
    [t.join(30) for t in threads]
    assert not errors, errors
    assert seen["b"] == (True, True)  # still there for b after a's block ended
    assert "samefile" not in MODELS.names() and "samefile_act" not in ACTIVATIONS.names()
