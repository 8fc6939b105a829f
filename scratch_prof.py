import subprocess, sys, time
def run(cmd):
    t=time.monotonic(); p=subprocess.run(cmd,capture_output=True,text=True); return time.monotonic()-t, p
def test_prof():
    t,p = run([sys.executable,"-X","importtime","-m","pytest","-q","-p","no:cacheprovider","-p","no:xdist","--collect-only","tests/test_guest_memfd.py"])
    rows=sorted((l.split("|") for l in p.stderr.splitlines() if l.count("|")==2 and l.split("|")[1].strip().isdigit()), key=lambda f:-int(f[1]))[:25]
    print(f"\nCOLLECT {t:.2f}s")
    for r in rows: print("IMP", r[1].strip(), r[2].rstrip())
    t,p = run([sys.executable,"-m","cProfile","-s","cumtime","-m","pytest","-q","-p","no:cacheprovider","-p","no:xdist","tests/test_guest_memfd.py"])
    print(f"RUN {t:.2f}s")
    for l in p.stdout.splitlines()[:80]:
        if "ncalls" in l or l.strip()[:1].isdigit(): print("PROF", l[:160])
