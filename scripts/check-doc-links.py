#!/usr/bin/env python3
"""Checks the relative links of README.md, docs/*.md and config/examples/*.md: the file exists and,
with #anchor, the anchor is a heading of that file (GitHub's slug rules).

Also keeps README.md under 300 lines.

    scripts/check-doc-links.py [ROOT]      # exit 1 if a link is broken or the README too long"""
import glob, os, re, sys
root = sys.argv[1] if len(sys.argv) > 1 else '.'
files = [os.path.join(root, 'README.md')] + sorted(glob.glob(os.path.join(root, 'docs/*.md')))
files += sorted(glob.glob(os.path.join(root, 'config/examples/*.md')))
def slugs(path):
    out, seen, fence = set(), {}, False
    for l in open(path).read().split('\n'):
        if l.startswith('```'):
            fence = not fence
        m = None if fence else re.match(r'#+ (.*)', l)
        if m:
            s = m.group(1).strip().lower()
            s = re.sub(r'[^\w\- ]', '', s).replace(' ', '-')
            n = seen.get(s, 0); seen[s] = n + 1
            out.add(s if n == 0 else f'{s}-{n}')
    return out
bad = 0
for f in files:
    text = open(f).read()
    text = re.sub(r'```.*?```', '', text, flags=re.S)
    for m in re.finditer(r'\]\(([^)\s]+)\)', text):
        link = m.group(1)
        if re.match(r'[a-z]+:', link):
            continue
        path, _, anchor = link.partition('#')
        target = os.path.normpath(os.path.join(os.path.dirname(f), path)) if path else f
        if not os.path.exists(target):
            print(f'{f}: {link}: no such file'); bad += 1; continue
        if anchor and target.endswith('.md') and anchor not in slugs(target):
            print(f'{f}: {link}: no such anchor'); bad += 1
# The README stays a ten-minute read; the reference lives in docs/ (linked from its table).
readme = os.path.join(root, 'README.md')
if os.path.exists(readme) and sum(1 for _ in open(readme)) >= 300:
    print(f'{readme}: 300 lines or more; move reference text to docs/'); bad += 1
print(f"{bad} broken link(s)")
sys.exit(1 if bad else 0)
