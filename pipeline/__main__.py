from pipeline.local.cli import main

main()
