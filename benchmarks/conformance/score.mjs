// Scores a results file of the cache test suite with the suite's own rules.
//   node score.mjs SUITE_DIR RESULTS.json  ->  JSON on stdout
// "passes" is the number of tests whose raw result is true: the figure cache-tests.fyi's
// results files give for each implementation (Squid 262 of 365...). "counts" classifies every
// test as the suite's pages do (determineTestResult: required/optimal/check kinds, depends_on).
import fs from 'fs'
import path from 'path'
import { pathToFileURL } from 'url'

const [suite, resultsFile] = process.argv.slice(2)
const load = async rel => import(pathToFileURL(path.join(suite, rel)))
const lib = fs.existsSync(path.join(suite, 'test-engine')) ? 'test-engine/lib' : 'lib'
const suites = (await load('tests/index.mjs')).default
// The npm release (0.4.5) has no results.mjs: there, a test is "pass" or "not_passed".
const classifier = fs.existsSync(path.join(suite, lib, 'results.mjs'))
  ? await load(`${lib}/results.mjs`)
  : null
const kinds = classifier
  ? Object.fromEntries(Object.entries(classifier.resultTypes).map(([k, v]) => [v[2], k]))
  : null
const results = JSON.parse(fs.readFileSync(resultsFile))

const counts = {}
const tests = []
for (const s of suites) {
  for (const t of s.tests) {
    const raw = results[t.id]
    if (raw === undefined) continue // browser-only tests are not run against a proxy
    const result = classifier
      ? kinds[classifier.determineTestResult(suites, t.id, results)[2]]
      : (raw === true ? 'pass' : 'not_passed')
    counts[result] = (counts[result] || 0) + 1
    tests.push({
      id: t.id,
      suite: s.id,
      name: t.name,
      kind: t.kind || 'required',
      depends_on: t.depends_on || [],
      result,
      message: raw === true ? '' : raw[1]
    })
  }
}
const passes = Object.values(results).filter(r => r === true).length
console.log(JSON.stringify({ total: tests.length, passes, counts, tests }, null, 1))
