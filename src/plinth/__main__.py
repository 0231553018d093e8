from plinth.cli import main

main()
