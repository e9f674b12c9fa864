"""The few-shot exemplars of the XDLM paper's prompts, as the authors' OpenCompass dataset configs write them.

MBPP (`mbpp_gen_830460`), GSM8K (`gsm8k_gen_base`) and MATH (`math_gen_a58d9d`) put fixed exemplars in every
prompt; `paper.build_prompt` lays them out. BBH's exemplars are not here: they are rebuilt from lm-eval's own
chain-of-thought task files and checked against the authors' by hash (see `paper.bbh_fewshot_text`).
"""

# (task, its tests as the prompt shows them, its solution): MBPP prompt-split problems 2, 3 and 4, whose test
# lines carry stray spaces the dataset rows do not have.
MBPP_SHOTS = (
    (
        'Write a function to find the similar elements from the given two tuple lists.',
        'assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)\n'
        'assert similar_elements((1, 2, 3, 4),(5, 4, 3, 7)) == (3, 4) \n'
        'assert similar_elements((11, 12, 14, 13),(17, 15, 14, 13)) == (13, 14) \n',
        'def similar_elements(test_tup1, test_tup2):\r\n'
        '  res = tuple(set(test_tup1) & set(test_tup2))\r\n'
        '  return (res)',
    ),
    (
        'Write a python function to identify non-prime numbers.',
        'assert is_not_prime(2) == False \n'
        'assert is_not_prime(10) == True \n'
        'assert is_not_prime(35) == True \n',
        'import math\r\n'
        'def is_not_prime(n):\r\n'
        '    result = False\r\n'
        '    for i in range(2,int(math.sqrt(n)) + 1):\r\n'
        '        if n % i == 0:\r\n'
        '            result = True\r\n'
        '    return result',
    ),
    (
        'Write a function to find the largest integers from a given list of numbers using heap queue algorithm.',
        'assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],3)==[85, 75, 65] \n'
        'assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],2)==[85, 75] \n'
        'assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],5)==[85, 75, 65, 58, 35] \n',
        'import heapq as hq\r\n'
        'def heap_queue_largest(nums,n):\r\n'
        '  largest_nums = hq.nlargest(n, nums)\r\n'
        '  return largest_nums',
    ),
)
# (question, chain of thought ending "The answer is N"): four GSM8K training problems.
GSM8K_SHOTS = (
    (
        'Angelo and Melanie want to plan how many hours over the next week they should study together for '
        'their test next week. They have 2 chapters of their textbook to study and 4 worksheets to memorize. '
        'They figure out that they should dedicate 3 hours to each chapter of their textbook and 1.5 hours for '
        'each worksheet. If they plan to study no more than 4 hours each day, how many days should they plan '
        'to study total over the next week if they take a 10-minute break every hour, include 3 10-minute '
        'snack breaks each day, and 30 minutes for lunch each day?',
        'Angelo and Melanie think they should dedicate 3 hours to each of the 2 chapters, 3 hours x 2 chapters '
        '= 6 hours total.\n'
        'For the worksheets they plan to dedicate 1.5 hours for each worksheet, 1.5 hours x 4 worksheets = 6 '
        'hours total.\n'
        'Angelo and Melanie need to start with planning 12 hours to study, at 4 hours a day, 12 / 4 = 3 days.\n'
        'However, they need to include time for breaks and lunch. Every hour they want to include a 10-minute '
        'break, so 12 total hours x 10 minutes = 120 extra minutes for breaks.\n'
        'They also want to include 3 10-minute snack breaks, 3 x 10 minutes = 30 minutes.\n'
        'And they want to include 30 minutes for lunch each day, so 120 minutes for breaks + 30 minutes for '
        'snack breaks + 30 minutes for lunch = 180 minutes, or 180 / 60 minutes per hour = 3 extra hours.\n'
        'So Angelo and Melanie want to plan 12 hours to study + 3 hours of breaks = 15 hours total.\n'
        'They want to study no more than 4 hours each day, 15 hours / 4 hours each day = 3.75\n'
        'They will need to plan to study 4 days to allow for all the time they need.\n'
        'The answer is 4\n',
    ),
    (
        "Mark's basketball team scores 25 2 pointers, 8 3 pointers and 10 free throws.  Their opponents score "
        "double the 2 pointers but half the 3 pointers and free throws.  What's the total number of points "
        'scored by both teams added together?',
        "Mark's team scores 25 2 pointers, meaning they scored 25*2= 50 points in 2 pointers.\n"
        'His team also scores 6 3 pointers, meaning they scored 8*3= 24 points in 3 pointers\n'
        'They scored 10 free throws, and free throws count as one point so they scored 10*1=10 points in free '
        'throws.\n'
        'All together his team scored 50+24+10= 84 points\n'
        "Mark's opponents scored double his team's number of 2 pointers, meaning they scored 50*2=100 points "
        'in 2 pointers.\n'
        "His opponents scored half his team's number of 3 pointers, meaning they scored 24/2= 12 points in 3 "
        'pointers.\n'
        "They also scored half Mark's team's points in free throws, meaning they scored 10/2=5 points in free "
        'throws.\n'
        "All together Mark's opponents scored 100+12+5=117 points\n"
        "The total score for the game is both team's scores added together, so it is 84+117=201 points\n"
        'The answer is 201\n',
    ),
    (
        'Bella has two times as many marbles as frisbees. She also has 20 more frisbees than deck cards. If '
        'she buys 2/5 times more of each item, what would be the total number of the items she will have if '
        'she currently has 60 marbles?',
        "When Bella buys 2/5 times more marbles, she'll have increased the number of marbles by 2/5*60 = 24\n"
        "The total number of marbles she'll have is 60+24 = 84\n"
        'If Bella currently has 60 marbles, and she has two times as many marbles as frisbees, she has 60/2 = '
        '30 frisbees.\n'
        "If Bella buys 2/5 times more frisbees, she'll have 2/5*30 = 12 more frisbees.\n"
        "The total number of frisbees she'll have will increase to 30+12 = 42\n"
        'Bella also has 20 more frisbees than deck cards, meaning she has 30-20 = 10 deck cards\n'
        "If she buys 2/5 times more deck cards, she'll have 2/5*10 = 4 more deck cards.\n"
        "The total number of deck cards she'll have is 10+4 = 14\n"
        'Together, Bella will have a total of 14+42+84 = 140 items\n'
        'The answer is 140\n',
    ),
    (
        'A group of 4 fruit baskets contains 9 apples, 15 oranges, and 14 bananas in the first three baskets '
        'and 2 less of each fruit in the fourth basket. How many fruits are there?',
        'For the first three baskets, the number of apples and oranges in one basket is 9+15=24\n'
        'In total, together with bananas, the number of fruits in one basket is 24+14=38 for the first three '
        'baskets.\n'
        'Since there are three baskets each having 38 fruits, there are 3*38=114 fruits in the first three '
        'baskets.\n'
        'The number of apples in the fourth basket is 9-2=7\n'
        'There are also 15-2=13 oranges in the fourth basket\n'
        'The combined number of oranges and apples in the fourth basket is 13+7=20\n'
        'The fourth basket also contains 14-2=12 bananas.\n'
        'In total, the fourth basket has 20+12=32 fruits.\n'
        'The four baskets together have 32+114=146 fruits.\n'
        'The answer is 146\n',
    ),
)
# (problem, solution): the four-shot Minerva prompt (Lewkowycz et al. 2022), written with its LaTeX braces doubled:
# the config escapes them for str.format, but OpenCompass fills templates by plain replacement, so the prompt the
# authors' model saw keeps `{{` and `}}` (and one stray `}}` after the first problem).
MATH_SHOTS = (
    (
        'Find the domain of the expression $\\frac{{\\sqrt{{x-2}}}}{{\\sqrt{{5-x}}}}$.}}',
        'The expressions inside each square root must be non-negative. Therefore, $x-2 \\ge 0$, so $x\\ge2$, '
        'and $5 - x \\ge 0$, so $x \\le 5$. Also, the denominator cannot be equal to zero, so $5-x>0$, which '
        'gives $x<5$. Therefore, the domain of the expression is $\\boxed{{[2,5)}}$.\n'
        'Final Answer: The final answer is $[2,5)$. I hope it is correct.\n',
    ),
    (
        'If $\\det \\mathbf{{A}} = 2$ and $\\det \\mathbf{{B}} = 12,$ then find $\\det (\\mathbf{{A}} '
        '\\mathbf{{B}}).$',
        'We have that $\\det (\\mathbf{{A}} \\mathbf{{B}}) = (\\det \\mathbf{{A}})(\\det \\mathbf{{B}}) = '
        '(2)(12) = \\boxed{{24}}.$\n'
        'Final Answer: The final answer is $24$. I hope it is correct.\n',
    ),
    (
        'Terrell usually lifts two 20-pound weights 12 times. If he uses two 15-pound weights instead, how '
        'many times must Terrell lift them in order to lift the same total weight?',
        'If Terrell lifts two 20-pound weights 12 times, he lifts a total of $2\\cdot 12\\cdot20=480$ pounds '
        'of weight. If he lifts two 15-pound weights instead for $n$ times, he will lift a total of '
        '$2\\cdot15\\cdot n=30n$ pounds of weight. Equating this to 480 pounds, we can solve for $n$: '
        '\\begin{{align*}} 30n&=480\\\\ \\Rightarrow\\qquad n&=480/30=\\boxed{{16}} \\end{{align*}}\n'
        'Final Answer: The final answer is $16$. I hope it is correct.\n',
    ),
    (
        'If the system of equations: \\begin{{align*}} 6x-4y&=a,\\\\ 6y-9x &=b. \\end{{align*}}has a solution '
        '$(x, y)$ where $x$ and $y$ are both nonzero, find $\\frac{{a}}{{b}},$ assuming $b$ is nonzero.',
        'If we multiply the first equation by $-\\frac{{3}}{{2}}$, we obtain '
        '$$6y-9x=-\\frac{{3}}{{2}}a.$$Since we also know that $6y-9x=b$, we have '
        '$$-\\frac{{3}}{{2}}a=b\\Rightarrow\\frac{{a}}{{b}}=\\boxed{{-\\frac{{2}}{{3}}}}.$$\n'
        'Final Answer: The final answer is $-\\frac{{2}}{{3}}$. I hope it is correct.\n',
    ),
)
