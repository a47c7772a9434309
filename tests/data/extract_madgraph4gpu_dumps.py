"""How ``madgraph4gpu_me.json`` was made (run once by hand; CI only reads the JSON).

Reads the reference dumps that madgraph4gpu's own tests compare against
(``epochX/cudacpp/*/test/ref/dump_CPUTest.Sigma_*.txt`` in github.com/madgraph5/madgraph4gpu,
produced by MadGraph5_aMC@NLO's standalone C++ output of the ``sm`` model with its default
param card) and keeps the first few events of each: momenta (E, px, py, pz) in GeV, incoming
first, and the matrix element |M|^2 summed over final and averaged over initial helicities and
colours. Usage: ``python extract_madgraph4gpu_dumps.py REPO_GIT_DIR > madgraph4gpu_me.json``.
"""

import json
import subprocess
import sys

DUMPS = {
    "g g > t t~": "gg_tt.sa/test/ref/dump_CPUTest.Sigma_sm_gg_ttx.txt",
    "g g > t t~ g": "gg_ttg.sa/test/ref/dump_CPUTest.Sigma_sm_gg_ttxg.txt",
    "g g > t t~ g g": "gg_ttgg.sa/test/ref/dump_CPUTest.Sigma_sm_gg_ttxgg.txt",
    "g u > t t~ u": "gq_ttq.sa/test/ref/dump_CPUTest.Sigma_sm_gu_ttxu.txt",
    "g u~ > t t~ u~": "gq_ttq.sa/test/ref/dump_CPUTest.Sigma_sm_gux_ttxux.txt",
    "u u~ > t t~": "pp_tt012j.mad/test/ref/dump_CPUTest.Sigma_sm_uux_ttx.txt",
    "u u~ > t t~ g": "pp_tt012j.mad/test/ref/dump_CPUTest.Sigma_sm_uux_ttxg.txt",
    "u u > t t~ u u": "pp_tt012j.mad/test/ref/dump_CPUTest.Sigma_sm_uu_ttxuu.txt",
    "u u~ > t t~ u u~": "pp_tt012j.mad/test/ref/dump_CPUTest.Sigma_sm_uux_ttxuux.txt",
    "u c > t t~ u c": "pp_tt012j.mad/test/ref/dump_CPUTest.Sigma_sm_uc_ttxuc.txt",
    "g g > t t~ u u~": "pp_tt012j.mad/test/ref/dump_CPUTest.Sigma_sm_gg_ttxuux.txt",
    "g u > t t~ g u": "pp_tt012j.mad/test/ref/dump_CPUTest.Sigma_sm_gu_ttxgu.txt",
    "u u~ > t t~ g g": "pp_tt012j.mad/test/ref/dump_CPUTest.Sigma_sm_uux_ttxgg.txt",
    "u d~ > t t~ w+": "nobm_pp_ttW.mad/test/ref/dump_CPUTest.Sigma_sm_no_b_mass_udx_ttxwp.txt",
    "d u~ > t t~ w-": "nobm_pp_ttW.mad/test/ref/dump_CPUTest.Sigma_sm_no_b_mass_dux_ttxwm.txt",
    "g u > t t~ w+ d": "nobm_pp_ttW.mad/test/ref/dump_CPUTest.Sigma_sm_no_b_mass_gu_ttxwpd.txt",
    "e+ e- > mu+ mu-": "ee_mumu.sa/test/ref/dump_CPUTest.Sigma_sm_epem_mupmum.txt",
}
N_EVENTS = 3


def parse(text, n_events):
    events, current = [], None
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if fields[0] == "Event":
            current = {"momenta": []}
        elif fields[0] == "ME" and current is not None:
            current["me"] = float(fields[1])
            events.append(current)
            current = None
            if len(events) == n_events:
                break
        elif current is not None and len(fields) == 5:
            current["momenta"].append([float(x) for x in fields[1:]])
    return events


def main(repo):
    commit = subprocess.check_output(["git", "-C", repo, "rev-parse", "HEAD"], text=True).strip()
    out = {
        "source": "github.com/madgraph5/madgraph4gpu epochX/cudacpp/*/test/ref (MadGraph5_aMC@NLO "
        "standalone C++, sm model, default param card)",
        "commit": commit,
        "processes": {},
    }
    for name, path in DUMPS.items():
        text = subprocess.check_output(
            ["git", "-C", repo, "show", f"HEAD:epochX/cudacpp/{path}"], text=True
        )
        out["processes"][name] = {"path": path, "events": parse(text, N_EVENTS)}
    json.dump(out, sys.stdout, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
