"""perch's runner for Paho's interoperability suites (not part of Paho).

Runs one of Paho's interoperability suites against a broker and prints one
JSON object: {"results": {test: "pass" | "fail" | "error" | "timeout"},
"details": {test: why}, "retried": [{"test", "first"}]}.

The tests run in one process, as upstream runs them, each with a time limit
(a test waiting for a packet the broker never sends would otherwise wait for
ever). A test that does not pass is run once more, in a process of its own
with the suite's set-up, and counts as passed if it passes then (listed in
"retried"): a failed test can leave clients behind that upset the next
ones, and a few tests time things to the second on a loaded machine.

usage: run_suite.py SUITE HOST PORT [TEST...]     SUITE: client_test | client_test5
"""
import contextlib, importlib, io, json, logging, os, signal, subprocess, sys, unittest

TIME_LIMIT = 90


class TimeLimit(Exception):
    pass


def load(suite_name, host, port):
    mod = importlib.import_module(suite_name)
    mod.host, mod.port = host, port
    # What the suites' __main__ sets (client_test5's setData() resets these).
    mod.topic_prefix = "client_test5/"
    mod.topics = ("TopicA", "TopicA/B", "Topic/C", "TopicA/C", "/TopicA")
    mod.wildtopics = ("TopicA/+", "+/C", "#", "/#", "/+", "+/+", "TopicA/#")
    mod.nosubscribe_topics = ("test/nosubscribe",)
    return mod


class LimitedResult(unittest.TextTestResult):
    """Arms an alarm around each test; records outcomes by test name."""

    def startTest(self, test):
        signal.alarm(TIME_LIMIT)
        super().startTest(test)

    def stopTest(self, test):
        signal.alarm(0)
        super().stopTest(test)


def on_alarm(_signum, _frame):
    raise TimeLimit(f"no result within {TIME_LIMIT} s")


def run(suite_name, host, port, names):
    """{name: (outcome, detail)} of the tests run in this process."""
    mod = load(suite_name, host, port)
    logging.getLogger().setLevel(logging.ERROR)
    signal.signal(signal.SIGALRM, on_alarm)
    loader = unittest.TestLoader()
    suite = unittest.TestSuite(loader.loadTestsFromName("Test." + n, mod) for n in names)
    runner = unittest.TextTestRunner(stream=io.StringIO(), verbosity=0, resultclass=LimitedResult)
    with contextlib.redirect_stdout(sys.stderr):
        result = runner.run(suite)
    outcomes = {n: ("pass", None) for n in names}
    for kind, items in (("fail", result.failures), ("error", result.errors)):
        for test, text in items:
            name = test.id().rsplit(".", 1)[-1]
            last = text.strip().splitlines()[-1][:300]
            outcomes[name] = ("timeout" if "TimeLimit" in last else kind, last)
    return outcomes


def run_alone(suite_name, host, port, name):
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        done = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--alone", suite_name, host, str(port), name],
            cwd=here, capture_output=True, text=True, timeout=TIME_LIMIT + 60)
        return tuple(json.loads(done.stdout.strip().splitlines()[-1]))
    except (subprocess.TimeoutExpired, IndexError, ValueError) as e:
        return ("timeout" if isinstance(e, subprocess.TimeoutExpired) else "error", str(e)[:300])


def main():
    if sys.argv[1] == "--alone":
        suite_name, host, port, name = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
        print(json.dumps(run(suite_name, host, port, [name])[name]))
        return
    suite_name, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    names = sys.argv[4:] or unittest.TestLoader().getTestCaseNames(load(suite_name, host, port).Test)
    outcomes = run(suite_name, host, port, names)
    retried = []
    for name, (outcome, detail) in list(outcomes.items()):
        if outcome == "pass":
            continue
        again = run_alone(suite_name, host, port, name)
        if again[0] == "pass":
            retried.append({"test": name, "first": detail})
        outcomes[name] = again
    results = {n: o for n, (o, _) in outcomes.items()}
    details = {n: d for n, (o, d) in outcomes.items() if o != "pass"}
    for n, o in sorted(results.items()):
        print(n, o, file=sys.stderr)
    print(json.dumps({"results": results, "details": details, "retried": retried},
                     indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
