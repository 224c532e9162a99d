// Accuracy figures for one classifier's scores.
//   node metrics.js NAME THRESHOLD SCORES-FILE
// SCORES-FILE lines: "spam|ham SCORE ..." (higher = more spammy).
// Prints: name, FP% and FN% at THRESHOLD (score >= THRESHOLD is spam),
// ROC AUC, and FN% at the strictest threshold keeping FP <= 0.1% of ham.
'use strict';
const fs = require('fs');
const [name, thr, file] = process.argv.slice(2);
const rows = fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map(l => {
    const [label, score] = l.split(/\s+/);
    return { spam: label === 'spam', score: parseFloat(score) };
});
const spam = rows.filter(r => r.spam), ham = rows.filter(r => !r.spam);
const t = parseFloat(thr);
const fp = ham.filter(r => r.score >= t).length / ham.length;
const fn = spam.filter(r => r.score < t).length / spam.length;
// AUC: probability a random spam scores above a random ham (ties count half).
const all = rows.slice().sort((a, b) => a.score - b.score);
let rankSum = 0;
for (let i = 0; i < all.length;) {
    let j = i;
    while (j < all.length && all[j].score === all[i].score) j++;
    const avg = (i + 1 + j) / 2;
    for (let k = i; k < j; k++) if (all[k].spam) rankSum += avg;
    i = j;
}
const auc = (rankSum - spam.length * (spam.length + 1) / 2) / (spam.length * ham.length);
// FN at FP <= 0.1%: the threshold just above the k-th highest ham score.
const allowed = Math.floor(ham.length * 0.001);
const hs = ham.map(r => r.score).sort((a, b) => b - a);
const cut = hs[allowed];      // ham scores > cut are the allowed false positives
const fn01 = spam.filter(r => !(r.score > cut)).length / spam.length;
const pct = x => (100 * x).toFixed(2) + '%';
console.log([name.padEnd(28), pct(fp).padStart(8), pct(fn).padStart(8),
             auc.toFixed(4).padStart(8), pct(fn01).padStart(12)].join(' '));
