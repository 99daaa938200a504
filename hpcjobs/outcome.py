"""The words every check in hpcjobs reports, whoever runs it (the planner, the doctor, the
job-side checks): one vocabulary, so reports and JSON read alike everywhere."""

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"
