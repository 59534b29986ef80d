from hybridops.flows.cli import app

app()
