from llmport.cli import main

main()
