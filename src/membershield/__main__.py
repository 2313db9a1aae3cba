from membershield.cli import main

main()
