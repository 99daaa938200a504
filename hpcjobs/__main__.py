from hpcjobs.cli import main

main(prog_name="hpcjobs")
