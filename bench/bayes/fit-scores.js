// Fit the scores of a rule file (the Bayes bands and the content rules) on
// cross-validated train-half data, and write them back into the file.
//
//   node fit-scores.js CV-FILE RULES-FILE [PRIOR-FILE] [-n]
//
// CV-FILE is the output of "osprey_bayes_bench -k K -r RULES-FILE TRAIN-LIST":
// one line per train message, "LABEL SCORE PATH PROB HITS", where PROB was
// computed by a classifier that did not see the message and HITS are the
// names of the rules that hit (comma-separated, "-" for none).  Only the
// train half is read; the test half is left for bench/bayes/run.sh.
//
// Model: a message's score is S = the sum of its hits' scores + 4 * PROB
// (BAYES_WEIGHT: the combined score run.sh measures and a scanner must
// compute), and P(spam) = 1 / (1 + exp(-SLOPE * (S - 5))): 5, the spam
// threshold, is even odds with ham counted HAM_WEIGHT times.  The scores
// minimise the weighted log loss plus LAMBDA * sum((score - prior)^2): the
// prior is the hand-set score from PRIOR-FILE ("NAME SCORE" lines, default
// prior.scores next to this script; 0 for a rule not listed), so a rule the
// train half says little about keeps about its hand-set score.  Constraints:
//   - the rules named BAYES_* are the Bayes bands (their "bayes >= X" /
//     "bayes < Y" clauses give the range); their scores may not fall as the
//     probability rises, a band below 50% may only lower the score and one
//     above 50% only raise it, within +-MAX_BAYES;
//   - a content rule keeps the sign of its prior and stays within
//     +-MAX_RULE, so no single content rule decides alone;
//   - a rule that never hit in CV-FILE keeps its score.
// SLOPE, LAMBDA and HAM_WEIGHT are chosen by 5-fold cross-validation over the
// lines of CV-FILE, by the false-negative rate at low false-positive rates
// (mean over FP <= 0.1%, 0.25% and 0.5% of ham): of the triples within one
// spam message of the best, the one with the largest LAMBDA (closest to the
// prior), then SLOPE, then HAM_WEIGHT wins.  Before that, a nested
// cross-validation (the whole procedure on four fifths, scored on the
// fifth) estimates what the fitted scores do on messages they were not
// fitted on, next to the prior's and the file's current scores.
// RULES-FILE is rewritten only when the nested estimate beats the file's
// current scores on that criterion (-f: always); -n never writes.
'use strict';
const fs = require('fs');
const path = require('path');

const THRESHOLD = 5;
const BAYES_WEIGHT = 4;          // as in run.sh
const MAX_RULE = 4.5;
const MAX_BAYES = 5;
const SLOPES = [1, 2, 3];
const LAMBDAS = [0.03, 0.1, 0.3, 1, 3, 10, 30];
const HAM_WEIGHTS = [1, 2, 5, 10];
const FOLDS = 5;

const args = process.argv.slice(2).filter(a => a !== '-n' && a !== '-f');
const dryRun = process.argv.includes('-n'), force = process.argv.includes('-f');
const [cvFile, rulesFile] = args;
const priorFile = args[2] || path.join(__dirname, 'prior.scores');
if (!cvFile || !rulesFile) {
    console.error('usage: node fit-scores.js CV-FILE RULES-FILE [PRIOR-FILE] [-n|-f]');
    process.exit(2);
}

// ---- the rule file: names in order and their scores
const src = fs.readFileSync(rulesFile, 'utf8');
// Statements start with "rule NAME:" at the start of a line; the outcome is
// the first "=> [action A] score N" after it.
const stmtRe = /^rule\s+([A-Za-z_][A-Za-z0-9_.]*)\s*:[\s\S]*?=>\s*(?:action\s+\w+\s+)?score\s+([-+]?\d+(?:\.\d+)?)/gm;
const rules = [];
for (let m; (m = stmtRe.exec(src)) !== null;) {
    // A band's probability range, from its "bayes >= X" / "bayes < Y" clauses.
    const lo = /\bbayes\s*>=?\s*([\d.]+)/.exec(m[0]), hi = /\bbayes\s*<=?\s*([\d.]+)/.exec(m[0]);
    rules.push({ name: m[1], score: parseFloat(m[2]), plo: lo ? parseFloat(lo[1]) : 0,
                 phi: hi ? parseFloat(hi[1]) : 1 });
}
const byName = new Map(rules.map((r, i) => [r.name, i]));

// ---- the data
const rows = fs.readFileSync(cvFile, 'utf8').split('\n').filter(Boolean).map(l => {
    const f = l.split(/\s+/);
    return { spam: f[0] === 'spam', prob: parseFloat(f[3]),
             hits: f[4] === '-' ? [] : f[4].split(',') };
});
const nSpam = rows.filter(r => r.spam).length, nHam = rows.length - nSpam;
const hitCount = new Map();
for (const r of rows)
    for (const h of r.hits) {
        if (!byName.has(h)) {
            console.error(`fit-scores: ${cvFile} names rule ${h}, not in ${rulesFile}`);
            process.exit(1);
        }
        const c = hitCount.get(h) || { spam: 0, ham: 0 };
        c[r.spam ? 'spam' : 'ham']++;
        hitCount.set(h, c);
    }

// ---- parameters: one per Bayes band and one per content rule that hit.
// Each parameter has a column (the rows whose score it adds to) and bounds.
// The prior: the penalty pulls each score towards it.
const priorMap = new Map();
for (const l of fs.readFileSync(priorFile, 'utf8').split('\n')) {
    const f = l.replace(/#.*/, '').trim().split(/\s+/);
    if (f.length === 2)
        priorMap.set(f[0], parseFloat(f[1]));
}
const priorOf = name => (priorMap.has(name) ? priorMap.get(name) : 0);

// The bands in order of rising probability.
const bands = rules.filter(r => r.name.startsWith('BAYES_'))
    .sort((a, b) => a.plo - b.plo || a.phi - b.phi).map(r => r.name);
const params = [];
for (const b of bands) {
    const r = rules[byName.get(b)];
    // Below 50% a band may only lower the score, above only raise it.
    params.push({ kind: 'band', name: b, lo: r.plo >= 0.5 ? 0 : -MAX_BAYES,
                  hi: r.phi <= 0.5 ? 0 : MAX_BAYES });
}
for (const r of rules) {
    if (r.name.startsWith('BAYES_') || !hitCount.has(r.name))
        continue;
    const neg = (priorMap.has(r.name) ? priorOf(r.name) : r.score) < 0;
    params.push({ kind: 'rule', name: r.name, lo: neg ? -MAX_RULE : 0, hi: neg ? 0 : MAX_RULE });
}
const paramOf = new Map(params.map((p, j) => [p.name, j]));
const prior = params.map(p => Math.max(p.lo, Math.min(p.hi, priorOf(p.name))));
const nBands = bands.length;
// For each row, the parameters it uses, and the fixed part of its score
// (the rules that are not fitted).
const rowParams = rows.map(r => r.hits.filter(h => paramOf.has(h)).map(h => paramOf.get(h)));
const fixed = rows.map(r => BAYES_WEIGHT * r.prob + r.hits.reduce((s, h) =>
    s + (paramOf.has(h) ? 0 : rules[byName.get(h)].score), 0));

const sigmoid = x => 1 / (1 + Math.exp(-x));

// Weighted isotonic (non-decreasing) regression: pool adjacent violators.
function pav(y, wt) {
    const blocks = [];
    for (let k = 0; k < y.length; k++) {
        blocks.push({ v: y[k], w: wt[k], n: 1 });
        while (blocks.length > 1 && blocks[blocks.length - 2].v > blocks[blocks.length - 1].v) {
            const q = blocks.pop(), p = blocks[blocks.length - 1];
            p.v = (p.v * p.w + q.v * q.w) / (p.w + q.w);
            p.w += q.w;
            p.n += q.n;
        }
    }
    const out = [];
    for (const bl of blocks)
        for (let k = 0; k < bl.n; k++) out.push(bl.v);
    return out;
}

// Fit on the rows in idx; returns the parameter vector.  Content rules:
// cyclic coordinate descent (Newton steps, clipped to the bounds).  Bands:
// a Newton step for all of them, projected back onto non-decreasing scores
// within their bounds (isotonic regression, then clipping: the bounds rise
// with the probability, so this is the projection).
function fit(idx, slope, lambda, hamWeight) {
    const w = Float64Array.from(prior);
    const cols = params.map(() => []);
    for (const i of idx)
        for (const j of rowParams[i]) cols[j].push(i);
    const S = new Float64Array(rows.length);
    for (const i of idx) S[i] = fixed[i];
    const gh = j => {
        let g = 2 * lambda * (w[j] - prior[j]), h = 2 * lambda + 1e-9;
        for (const i of cols[j]) {
            const q = sigmoid(slope * (S[i] - THRESHOLD)), wt = rows[i].spam ? 1 : hamWeight;
            g += slope * wt * (q - (rows[i].spam ? 1 : 0));
            h += slope * slope * wt * q * (1 - q);
        }
        return [g, h];
    };
    const move = (j, d) => {
        if (d === 0)
            return 0;
        for (const i of cols[j]) S[i] += d;
        w[j] += d;
        return Math.abs(d);
    };
    for (let sweep = 0; sweep < 2000; sweep++) {
        let maxd = 0;
        if (nBands) {
            const y = [], hw = [];
            for (let k = 0; k < nBands; k++) {
                const [g, h] = gh(k);
                y.push(w[k] + Math.max(-1, Math.min(1, -g / h)));
                hw.push(h);
            }
            const z = pav(y, hw);
            for (let k = 0; k < nBands; k++) {
                const t = Math.max(params[k].lo, Math.min(params[k].hi, z[k]));
                // Half steps: the joint step may overshoot.
                maxd = Math.max(maxd, move(k, 0.5 * (t - w[k])));
            }
        }
        for (let j = nBands; j < params.length; j++) {
            const [g, h] = gh(j);
            const step = Math.max(-1, Math.min(1, -g / h));
            const nw = Math.max(params[j].lo, Math.min(params[j].hi, w[j] + step));
            maxd = Math.max(maxd, move(j, nw - w[j]));
        }
        if (maxd < 1e-6)
            break;
    }
    return w;
}

// The scores a parameter vector gives each rule (name -> score).
function scoresOf(w) {
    return new Map(params.map((p, j) => [p.name, w[j]]));
}

function rowScore(i, s) {
    return BAYES_WEIGHT * rows[i].prob +
        rows[i].hits.reduce((t, h) => t + (s.has(h) ? s.get(h) : rules[byName.get(h)].score), 0);
}

// FN rate at the strictest threshold keeping FP <= frac of ham (as metrics.js).
function fnAt(scored, frac) {
    const ham = scored.filter(x => !x.spam).map(x => x.score).sort((a, b) => b - a);
    const spam = scored.filter(x => x.spam);
    const cut = ham[Math.floor(ham.length * frac)];
    return spam.filter(x => !(x.score > cut)).length / spam.length;
}

const crit = scored => (fnAt(scored, 0.001) + fnAt(scored, 0.0025) + fnAt(scored, 0.005)) / 3;

// ---- choose SLOPE, LAMBDA and HAM_WEIGHT by cross-validation over idx
// (fold = position in idx modulo FOLDS)
function select(idx, verbose) {
    const cands = [];
    for (const slope of SLOPES) {
        for (const lambda of LAMBDAS) {
            for (const hw of HAM_WEIGHTS) {
                const scored = [];
                for (let f = 0; f < FOLDS; f++) {
                    const tr = idx.filter((_, k) => k % FOLDS !== f);
                    const te = idx.filter((_, k) => k % FOLDS === f);
                    const s = scoresOf(fit(tr, slope, lambda, hw));
                    for (const i of te) scored.push({ spam: rows[i].spam, score: rowScore(i, s) });
                }
                const c = crit(scored);
                if (verbose)
                    console.error(`slope ${slope} lambda ${lambda} ham-weight ${hw}: mean FN at ` +
                                  `FP<=0.1/0.25/0.5% ${pct(c)}, FN at FP<=0.1% ` +
                                  `${pct(fnAt(scored, 0.001))}`);
                cands.push({ slope, lambda, hw, c });
            }
        }
    }
    const nsp = idx.filter(i => rows[i].spam).length;
    const cmin = Math.min(...cands.map(x => x.c));
    return cands.filter(x => x.c <= cmin + 1 / nsp + 1e-12).sort((x, y) =>
        y.lambda - x.lambda || y.slope - x.slope || y.hw - x.hw)[0];
}
const pct = x => (100 * x).toFixed(2) + '%';
const all = rows.map((_, i) => i);

// ---- estimate what the whole procedure achieves on messages it did not
// fit (nested cross-validation: selection and fit on four fifths, scored on
// the fifth), next to the rule file's current scores on the same messages.
let nestedWins;
{
    const nested = [], current = [];
    for (let f = 0; f < FOLDS; f++) {
        const tr = all.filter(i => i % FOLDS !== f), te = all.filter(i => i % FOLDS === f);
        const b = select(tr, false);
        const s = scoresOf(fit(tr, b.slope, b.lambda, b.hw));
        for (const i of te) nested.push({ spam: rows[i].spam, score: rowScore(i, s) });
    }
    const priorScores = scoresOf(prior), priorRows = [];
    for (const i of all) {
        current.push({ spam: rows[i].spam, score: rowScore(i, new Map()) });
        priorRows.push({ spam: rows[i].spam, score: rowScore(i, priorScores) });
    }
    const line = x => `FN at FP<=0.1% ${pct(fnAt(x, 0.001))}, mean FN at FP<=0.1/0.25/0.5% ` +
        `${pct(crit(x))}, at score ${THRESHOLD}: FP ${x.filter(y => !y.spam && y.score >= THRESHOLD).length}` +
        `, FN ${x.filter(y => y.spam && y.score < THRESHOLD).length}`;
    console.error(`train, prior scores:            ${line(priorRows)}`);
    console.error(`train, current scores:          ${line(current)}`);
    console.error(`train, nested cross-validation: ${line(nested)}`);
    nestedWins = crit(nested) < crit(current);
}

const best = select(all, true);
console.error(`chosen: slope ${best.slope}, lambda ${best.lambda}, ham weight ${best.hw}`);

// ---- final fit on every row, rounded to 0.01
const fitted = scoresOf(fit(all, best.slope, best.lambda, best.hw));
for (const [k, v] of fitted) fitted.set(k, Math.round(v * 100) / 100 + 0);
const scored = all.map(i => ({ spam: rows[i].spam, score: rowScore(i, fitted) }));
console.error(`train (${nSpam} spam, ${nHam} ham), in-sample: FN at FP<=0.1% ` +
              `${(100 * fnAt(scored, 0.001)).toFixed(2)}%, at score ${THRESHOLD}: FP ` +
              `${scored.filter(x => !x.spam && x.score >= THRESHOLD).length}, FN ` +
              `${scored.filter(x => x.spam && x.score < THRESHOLD).length}`);
console.error('rule                          spam   ham     old     new');
for (const r of rules) {
    const c = hitCount.get(r.name) || { spam: 0, ham: 0 };
    const nw = fitted.has(r.name) ? fitted.get(r.name) : r.score;
    console.error(`${r.name.padEnd(28)} ${String(c.spam).padStart(5)} ${String(c.ham).padStart(5)} ` +
                  `${r.score.toFixed(2).padStart(7)} ${nw.toFixed(2).padStart(7)}`);
}

if (dryRun)
    process.exit(0);
if (!nestedWins && !force) {
    console.error(`fit-scores: on held-out train messages the fitted scores do not beat the ` +
                  `current ones; ${rulesFile} left as it is (-f writes anyway)`);
    process.exit(0);
}
let out = src.replace(stmtRe, (whole, name, num) => {
    if (!fitted.has(name))
        return whole;
    return whole.slice(0, whole.length - num.length) + fitted.get(name).toFixed(2);
});
fs.writeFileSync(rulesFile, out);
console.error(`fit-scores: wrote ${fitted.size} scores into ${rulesFile}`);
