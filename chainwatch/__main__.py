from chainwatch.cli import run

run()
