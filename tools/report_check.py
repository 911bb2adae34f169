"""Check study reports in a real browser: each report.html at 800 px width in headless Chromium must not
overflow horizontally, must show every image and must log no console errors; a screenshot per report is saved.

    python tools/report_check.py [--out DIR] [RUN_DIR_OR_REPORT_HTML ...]

Without arguments it first makes a tiny run of each study (the tiny configs of the study tests, on the CPU,
about a minute on two cores) under ``DIR/runs``. Screenshots go to ``DIR/screenshots/STUDY.png``. Exit status 0
when every report passes, 1 with one line per problem otherwise, 2 when Chromium is missing (Debian:
``apt-get install chromium``). Not part of ``make test``: it needs a browser.

The page is loaded from a copy with a small script injected: it records uncaught errors, failed resource loads
and ``console.error`` calls, and after ``load`` writes its measurements (viewport and document width, elements
reaching past the viewport outside a horizontally scrolling table box, images that did not decode) into the
DOM, which ``chromium --dump-dom`` returns.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 800
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--mute-audio",
                  "--disable-extensions", "--disable-dev-shm-usage"]

PROBE_HEAD = """<script>window.__errors=[];
window.addEventListener('error',function(e){var t=e.target;window.__errors.push(t&&t!==window&&(t.src||t.href)?
 'failed to load '+String(t.src||t.href).slice(0,80):String(e.message));},true);
(function(){var ce=console.error;console.error=function(){window.__errors.push(
 Array.prototype.join.call(arguments,' '));return ce.apply(console,arguments);};})();</script>"""
PROBE_BODY = """<script>window.addEventListener('load',function(){
var de=document.documentElement,W=de.clientWidth,wide=[];
document.querySelectorAll('body *').forEach(function(el){if(el.closest('.scroll')||el.id==='__report_check__')return;
 var r=el.getBoundingClientRect();if(r.width>0&&r.right>W+1&&wide.length<8)wide.push(el.tagName.toLowerCase()+
 (el.id?'#'+el.id:'')+(el.className?'.'+el.className:'')+' right='+Math.round(r.right));});
var broken=[];for(var i=0;i<document.images.length;i++){var im=document.images[i];
 if(!(im.complete&&im.naturalWidth>0))broken.push(im.alt||String(im.src).slice(0,60));}
var pre=document.createElement('pre');pre.id='__report_check__';pre.textContent=JSON.stringify({width:W,
 scrollWidth:de.scrollWidth,wide:wide,broken:broken,errors:window.__errors,images:document.images.length});
document.body.appendChild(pre);});</script>"""


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def tiny_runs(out: Path) -> list[Path]:
    """A tiny run of each study (the study tests' tiny configs, CPU, one thread); returns the run directories."""
    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    torch.set_num_threads(1)
    from advsal.progress import set_quiet
    from advsal.studies import get_study, study_config

    set_quiet(True)
    import test_study_attention as t_att
    import test_study_detection as t_det
    import test_study_explanation as t_exp
    import test_study_imbalance as t_imb

    configs = {"detection": t_det.tiny_config("cpu"), "imbalance": t_imb.tiny_config("cpu"),
               "explanation": study_config("explanation", overrides={**t_exp.TINY, "device": "cpu"}),
               "attention": t_att.tiny_config()}
    dirs = []
    for study, cfg in configs.items():
        run_dir = out / "runs" / study
        print(f"tiny {study} run → {run_dir}", flush=True)
        get_study(study).run(cfg, run_dir)
        dirs.append(run_dir)
    return dirs


def check_report(page: Path, browser: str, shots: Path, work: Path) -> list[str]:
    """Problems of one report.html at WIDTH px (empty when it passes); saves its screenshot."""
    name = page.parent.name if page.name == "report.html" else page.stem
    text = page.read_text(encoding="utf-8")
    probe = work / f"{name}-probe.html"
    probe.write_text(re.sub("<head>", "<head>" + PROBE_HEAD, text, count=1).replace("</body>", PROBE_BODY + "</body>"),
                     encoding="utf-8")
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=work)
    common = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=10000"]
    dom = subprocess.run([*common, f"--window-size={WIDTH},1200", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120)
    found = re.search(r"<pre id=\"__report_check__\">(.*?)</pre>", dom.stdout, re.S)
    problems = []
    if not found:
        return [f"{name}: the page did not finish loading (chromium exit {dom.returncode}: "
                f"{dom.stderr.strip().splitlines()[-1:] or ''})"]
    m = json.loads(found.group(1).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))
    if m["scrollWidth"] > m["width"] + 1:
        problems.append(f"{name}: page is {m['scrollWidth']} px wide at a {m['width']} px viewport; too wide: "
                        f"{', '.join(m['wide']) or '?'}")
    elif m["wide"]:
        problems.append(f"{name}: elements reach past the {m['width']} px viewport: {', '.join(m['wide'])}")
    if m["broken"]:
        problems.append(f"{name}: {len(m['broken'])} of {m['images']} images did not load: {m['broken'][:3]}")
    if m["errors"]:
        problems.append(f"{name}: console errors: {m['errors'][:3]}")
    shots.mkdir(parents=True, exist_ok=True)
    shot = shots / f"{name}.png"
    subprocess.run([*common, f"--window-size={WIDTH},3000", f"--screenshot={shot}", page.resolve().as_uri()],
                   capture_output=True, text=True, timeout=120)
    if not shot.is_file():
        problems.append(f"{name}: no screenshot was written")
    print(f"{name}: {m['images']} images, document {m['scrollWidth']} px at {m['width']} px, "
          f"{'ok' if not problems else 'FAILED'}; screenshot {shot}", flush=True)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", type=Path, help="run directories or report.html files "
                                                              "(default: tiny runs of every study)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "report-check")
    args = parser.parse_args(argv)
    browser = chromium()
    if browser is None:
        print("report-check: Chromium not found; install it (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    targets = args.targets or tiny_runs(args.out)
    pages = [t / "report.html" if t.is_dir() else t for t in targets]
    missing = [str(p) for p in pages if not p.is_file()]
    if missing:
        print(f"report-check: no report at {', '.join(missing)}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="report-check-"))
    try:
        problems = [p for page in pages for p in check_report(page, browser, args.out / "screenshots", work)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for p in problems:
        print(p)
    print(f"report-check: {len(pages)} reports, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
