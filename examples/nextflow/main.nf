// Says hello in a few languages and publishes the greetings to params.outdir.
nextflow.enable.dsl = 2

params.greetings = ['Hello', 'Bonjour', 'Hola']
params.outdir = 'results'

process SAY_HELLO {
    publishDir params.outdir, mode: 'copy'
    input:
    val greeting
    output:
    path "${greeting}.txt"
    script:
    """
    echo '${greeting}, world!' > ${greeting}.txt
    """
}

workflow {
    Channel.of(*params.greetings) | SAY_HELLO
}
