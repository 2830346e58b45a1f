"""The service's load, fault and page figures (issue 22), on loopback with real `noveltynets serve` processes.

    python benchmarks/service_bench.py load      > docs/benchmarks/service/load.log     # 8 clients x 10 requests
    python benchmarks/service_bench.py faults    > docs/benchmarks/service/faults.log   # kill -9 x 20
    python benchmarks/service_bench.py page docs/service.png                            # the page after three batches

The same helpers as the tests (tests/service_helpers.py), which assert on every figure's invariants."""

import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))
from tests.service_helpers import Server, add_user, kill_loop, load_run  # noqa: E402


def page(out: Path) -> None:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as d:
        store = Path(d) / "m.sqlite"
        token = add_user(store, "viewer")
        srv = Server(store).start()
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox", "--disable-gpu"])
                pg = browser.new_page(viewport={"width": 1000, "height": 760})
                pg.goto(srv.url + "/")
                pg.fill("#token", token)
                pg.click("#signin-button")
                pg.wait_for_selector("#more:not([disabled])")
                pg.check("#compare")  # each "more": a novelty batch and a plain one, both on the plot
                for k in range(3):
                    pg.click("#more")
                    pg.wait_for_function(f"document.querySelectorAll('#gallery .batch').length >= {2 * (k + 1)} && "
                                         "!document.querySelector('#more').disabled", timeout=300_000)
                pg.screenshot(path=str(out), full_page=True)
                print(json.dumps({"screenshot": str(out), "points": json.loads(pg.get_attribute("#plot", "data-points"))}))
                browser.close()
        finally:
            srv.stop()


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else "load"
    if what == "page":
        return page(Path(sys.argv[2] if len(sys.argv) > 2 else "docs/service.png"))
    with tempfile.TemporaryDirectory() as d:
        stats = load_run(Path(d) / "m.sqlite") if what == "load" else kill_loop(Path(d) / "m.sqlite", kills=20)
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in stats.items()}))


if __name__ == "__main__":
    main()
