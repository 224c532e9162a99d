#!/usr/bin/env python3
"""Convert the RFC 7208 test suite (YAML, as shipped by python3-spf) into
what tests/unit/test_spf_suite reads: one zone file per scenario in the
format of osp_dns (RFC 1035 master-file lines plus "name TIMEOUT") and one
flat case file.

  convert-rfc7208.py /usr/share/doc/python3-spf/rfc7208-tests.yml.gz OUTDIR

The converted copy is committed under tests/data/spf/rfc7208/, so the tests
do not need python3-spf; rerun this to refresh it."""
import gzip
import os
import sys

import yaml


def esc_name(name):
    out = []
    for b in name.encode('utf-8'):
        c = chr(b)
        if c.isalnum() or c in '-_.*':
            out.append(c)
        else:
            out.append('\\%03d' % b)
    n = ''.join(out)
    return n if n.endswith('.') else n + '.'


def label_ok(name):
    labels = name.rstrip('.').split('.')
    return all(0 < len(l.encode('utf-8')) <= 63 for l in labels) and len(name) <= 253


def esc_txt(s):
    data = s.encode('utf-8')
    chunks = [data[i:i + 255] for i in range(0, len(data), 255)] or [b'']
    out = []
    for ch in chunks:
        q = []
        for b in ch:
            if 0x20 <= b < 0x7f and b not in (0x22, 0x5c):
                q.append(chr(b))
            else:
                q.append('\\%03d' % b)
        out.append('"' + ''.join(q) + '"')
    return ' '.join(out)


def rr_lines(name, rr):
    if rr == 'TIMEOUT':
        return ['%s TIMEOUT' % esc_name(name)]
    (t, v), = rr.items()
    owner = esc_name(name)
    if v == 'TIMEOUT':
        return ['%s TIMEOUT' % owner]
    if t in ('TXT', 'SPF'):
        strs = v if isinstance(v, list) else [v]
        # A TXT record without strings cannot exist in DNS (and unbound
        # answers SERVFAIL for one); serve one empty string, which is what
        # the test means ("null text ... SPF should not crash").
        if not strs:
            strs = ['']
        return ['%s 300 IN %s %s' % (owner, t, ' '.join(esc_txt(s) for s in strs))]
    if t in ('A', 'AAAA'):
        vals = v if isinstance(v, list) else [v]
        return ['%s 300 IN %s %s' % (owner, t, x) for x in vals]
    if t == 'MX':
        pref, host = v
        return ['%s 300 IN MX %d %s' % (owner, pref, esc_name(host) if host else '.')]
    if t in ('PTR', 'CNAME'):
        return ['%s 300 IN %s %s' % (owner, t, esc_name(v))]
    raise ValueError('unknown type %s' % t)


def zone_lines(name, rrs):
    """pyspf's test resolver: an SPF record is also served as TXT unless the
    name lists TXT (even as NONE); NONE emits nothing; a bare TIMEOUT makes
    every type not listed before it time out (generated TXT comes last, so
    it times out too)."""
    out = []
    has_txt = any(isinstance(r, dict) and 'TXT' in r for r in rrs)
    generated = []
    for rr in rrs:
        if rr == 'TIMEOUT':
            out.append('%s TIMEOUT' % esc_name(name))
            return out
        (t, v), = rr.items()
        if t == 'SPF' and not has_txt and v != 'NONE':
            generated.append({'TXT': v})
        if v == 'NONE':
            continue
        out.extend(rr_lines(name, rr))
    for rr in generated:
        out.extend(rr_lines(name, rr))
    return out


def flat(s):
    return s.replace('\\', '\\\\').replace('\n', '\\n')


def main():
    src, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    docs = list(yaml.safe_load_all(gzip.open(src, 'rt', encoding='utf-8')))
    cases = []
    for i, d in enumerate(docs):
        zname = 'scenario%02d.zone' % i
        lines = ['; %s' % d['description']]
        for name, rrs in d.get('zonedata', {}).items():
            if not label_ok(name):
                lines.append('; skipped (not a valid DNS name): %r' % name)
                continue
            lines.extend(zone_lines(name, rrs))
        with open(os.path.join(out, zname), 'w', encoding='utf-8') as f:
            f.write('\n'.join(lines) + '\n')
        cases.append('scenario %s %s' % (zname, flat(d['description'])))
        for tname, t in d['tests'].items():
            res = t['result'] if isinstance(t['result'], list) else [t['result']]
            cases.append('test %s' % tname)
            cases.append('spec %s' % flat(str(t.get('spec', ''))))
            cases.append('host %s' % t['host'])
            cases.append('mailfrom %s' % flat(t.get('mailfrom', '')))
            cases.append('helo %s' % flat(t.get('helo', '')))
            cases.append('result %s' % ' '.join(res))
            if 'explanation' in t:
                cases.append('explanation %s' % flat(t['explanation']))
            cases.append('end')
    with open(os.path.join(out, 'rfc7208.cases'), 'w', encoding='utf-8') as f:
        f.write('\n'.join(cases) + '\n')


if __name__ == '__main__':
    main()
